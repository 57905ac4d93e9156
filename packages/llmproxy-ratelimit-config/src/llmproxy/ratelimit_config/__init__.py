"""Per-tenant rate-limit configuration: PostgreSQL storage, Redis + in-process cache, configured defaults."""

from ._defaults import DEFAULTS, RateLimitDefaults
from ._models import (
    MAX_LIMIT,
    ApiKeyLimit,
    EndpointLimit,
    EndpointPath,
    GlobalLimit,
    Limit,
    TenantRateLimitConfiguration,
)
from ._version import __version__

__all__ = [
    "DEFAULTS",
    "MAX_LIMIT",
    "ApiKeyLimit",
    "EndpointLimit",
    "EndpointPath",
    "GlobalLimit",
    "Limit",
    "RateLimitDefaults",
    "TenantRateLimitConfiguration",
    "__version__",
]
