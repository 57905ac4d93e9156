"""Per-tenant rate-limit configuration: PostgreSQL storage, Redis + in-process cache, configured defaults."""

from ._cache import INVALIDATION_CHANNEL, SOURCES, CacheStats, Loaded, Source, cache_key
from ._defaults import DEFAULTS, RateLimitDefaults
from ._models import (
    MAX_ENTRIES,
    MAX_LIMIT,
    MAX_MODEL_LENGTH,
    NO_BUDGETS,
    ApiKeyId,
    ApiKeyLimit,
    ApiKeyPolicy,
    Budget,
    BudgetPeriod,
    Budgets,
    EndpointLimit,
    EndpointPath,
    GlobalLimit,
    Limit,
    ModelLimit,
    ModelName,
    TenantRateLimitConfiguration,
)
from ._options import RateLimitConfigOptions
from ._repository import AsyncRateLimitConfigRepository, RateLimitConfigRepository
from ._service import AsyncRateLimitConfigService, RateLimitConfigService
from ._tables import (
    api_key_model_allowlists_table,
    configurations_table,
    endpoint_limits_table,
    model_limits_table,
    spend_budgets_table,
)
from ._version import __version__

__all__ = [
    "DEFAULTS",
    "INVALIDATION_CHANNEL",
    "MAX_ENTRIES",
    "MAX_LIMIT",
    "MAX_MODEL_LENGTH",
    "NO_BUDGETS",
    "SOURCES",
    "ApiKeyId",
    "ApiKeyLimit",
    "ApiKeyPolicy",
    "AsyncRateLimitConfigRepository",
    "AsyncRateLimitConfigService",
    "Budget",
    "BudgetPeriod",
    "Budgets",
    "CacheStats",
    "EndpointLimit",
    "EndpointPath",
    "GlobalLimit",
    "Limit",
    "Loaded",
    "ModelLimit",
    "ModelName",
    "RateLimitConfigOptions",
    "RateLimitConfigRepository",
    "RateLimitConfigService",
    "RateLimitDefaults",
    "Source",
    "TenantRateLimitConfiguration",
    "__version__",
    "api_key_model_allowlists_table",
    "cache_key",
    "configurations_table",
    "endpoint_limits_table",
    "model_limits_table",
    "spend_budgets_table",
]
