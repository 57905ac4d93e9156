"""The domain model of per-tenant rate-limit configuration (pure, validated)."""

from __future__ import annotations

import enum
import uuid
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

#: The largest value a limit may take (PostgreSQL BIGINT).
MAX_LIMIT = 2**63 - 1

#: A limit: a non-negative 64-bit integer. 0 admits nothing.
Limit = Annotated[int, Field(ge=0, le=MAX_LIMIT, strict=True)]

MAX_PATH_LENGTH = 500


def _check_path(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError("endpoint path must start with '/'")
    if len(path) > MAX_PATH_LENGTH:
        raise ValueError(f"endpoint path must be at most {MAX_PATH_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        raise ValueError("endpoint path must not contain whitespace or control characters")
    return path


EndpointPath = Annotated[str, AfterValidator(_check_path)]

#: the longest model name (and API key id) a configuration holds
MAX_MODEL_LENGTH = 200
#: the most model limits, allow-listed models per key, or key policies one configuration holds
MAX_ENTRIES = 1000


def _check_name(what: str, value: str) -> str:
    if not 0 < len(value) <= MAX_MODEL_LENGTH:
        raise ValueError(f"{what} must be 1 to {MAX_MODEL_LENGTH} characters long")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError(f"{what} must not contain whitespace or control characters")
    return value


def _check_model(value: str) -> str:
    return _check_name("model name", value)


def _check_key_id(value: str) -> str:
    return _check_name("API key id", value)


#: A model's name as the request names it (``gpt-4o``): 1-200 printable characters, no whitespace.
ModelName = Annotated[str, AfterValidator(_check_model)]
#: An API key's id as the RequestContext carries it (``api_key_id``).
ApiKeyId = Annotated[str, AfterValidator(_check_key_id)]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class GlobalLimit(BaseModel):
    """Limits on everything a tenant does."""

    model_config = _FROZEN

    requests_per_minute: Limit
    requests_per_day: Limit
    tokens_per_minute: Limit
    tokens_per_day: Limit


class ApiKeyLimit(BaseModel):
    """Limits on each API key of the tenant."""

    model_config = _FROZEN

    requests_per_minute: Limit
    tokens_per_minute: Limit


class EndpointLimit(BaseModel):
    """Limits on one endpoint (path). ``burst_capacity`` is how many requests may arrive at once."""

    model_config = _FROZEN

    requests_per_minute: Limit
    tokens_per_minute: Limit
    burst_capacity: Limit


class ModelLimit(BaseModel):
    """Limits on one model, tenant-wide (every key of the tenant together). None: that one is not limited."""

    model_config = _FROZEN

    requests_per_minute: Limit | None = None
    tokens_per_minute: Limit | None = None
    tokens_per_day: Limit | None = None


class BudgetPeriod(enum.StrEnum):
    """A spend budget's period: a calendar day or month (in the budget's ``utc_offset_hours``)."""

    DAY = "day"
    MONTH = "month"


class Budget(BaseModel):
    """At most ``limit_micros`` (integer micro-units of ``currency``: 1 USD = 1 000 000) spent per period.

    ``soft_threshold_percent``: when spending first reaches this share of the limit in a period, one alert is
    raised (an audit event and a metric in the gateway). ``utc_offset_hours``: the periods are calendar
    days/months of this whole-hour offset from UTC (0: UTC).
    """

    model_config = _FROZEN

    limit_micros: Limit
    soft_threshold_percent: Annotated[int, Field(ge=1, le=100, strict=True)] = 80
    utc_offset_hours: Annotated[int, Field(ge=-12, le=14, strict=True)] = 0
    #: the one currency of the price table (llmproxy-metering's prices are in USD)
    currency: Literal["USD"] = "USD"

    @property
    def soft_limit_micros(self) -> int:
        """The spend at which the soft threshold is reached."""
        return self.limit_micros * self.soft_threshold_percent // 100


class Budgets(BaseModel):
    """A tenant's (or an API key's) spend budgets: per day and/or per calendar month."""

    model_config = _FROZEN

    day: Budget | None = None
    month: Budget | None = None

    def items(self) -> list[tuple[BudgetPeriod, Budget]]:
        return [(p, b) for p, b in ((BudgetPeriod.DAY, self.day), (BudgetPeriod.MONTH, self.month)) if b]

    def __bool__(self) -> bool:
        return self.day is not None or self.month is not None


NO_BUDGETS = Budgets()


class ApiKeyPolicy(BaseModel):
    """What one API key of the tenant may do beyond ``api_key_limit``: the models it may call (None: every
    model) and its own spend budgets."""

    model_config = _FROZEN

    allowed_models: Annotated[frozenset[ModelName], Field(max_length=MAX_ENTRIES)] | None = None
    budgets: Budgets = NO_BUDGETS

    def allows(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models


def _drop_unrestricted(policies: dict[str, ApiKeyPolicy]) -> dict[str, ApiKeyPolicy]:
    # A policy restricting nothing (every model, no budgets) means what no policy means. Keeping one spelling
    # of "unrestricted" lets a configuration equal itself after storage, which keeps no rows for such a key.
    return {key: p for key, p in policies.items() if p.allowed_models is not None or p.budgets}


class TenantRateLimitConfiguration(BaseModel):
    """Every rate limit that applies to one tenant."""

    model_config = _FROZEN

    tenant_id: uuid.UUID
    global_limit: GlobalLimit
    api_key_limit: ApiKeyLimit
    endpoint_limits: dict[EndpointPath, EndpointLimit] = Field(default_factory=dict)
    #: limits per model, tenant-wide
    model_limits: Annotated[dict[ModelName, ModelLimit], Field(max_length=MAX_ENTRIES)] = Field(
        default_factory=dict
    )
    #: the tenant's spend budgets (every key together)
    budgets: Budgets = NO_BUDGETS
    #: per API key (its ``api_key_id``): a model allow-list and its own budgets
    #: (a policy that restricts nothing is dropped: absent and unrestricted are the same)
    api_keys: Annotated[
        dict[ApiKeyId, ApiKeyPolicy], Field(max_length=MAX_ENTRIES), AfterValidator(_drop_unrestricted)
    ] = Field(default_factory=dict)

    def endpoint_limit(self, path: str) -> EndpointLimit | None:
        return self.endpoint_limits.get(path)

    def model_limit(self, model: str) -> ModelLimit | None:
        return self.model_limits.get(model)

    def api_key_policy(self, api_key_id: str) -> ApiKeyPolicy | None:
        return self.api_keys.get(api_key_id)
