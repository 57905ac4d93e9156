"""The domain model of per-tenant rate-limit configuration (pure, validated)."""

from __future__ import annotations

import uuid
from typing import Annotated

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


class TenantRateLimitConfiguration(BaseModel):
    """Every rate limit that applies to one tenant."""

    model_config = _FROZEN

    tenant_id: uuid.UUID
    global_limit: GlobalLimit
    api_key_limit: ApiKeyLimit
    endpoint_limits: dict[EndpointPath, EndpointLimit] = Field(default_factory=dict)

    def endpoint_limit(self, path: str) -> EndpointLimit | None:
        return self.endpoint_limits.get(path)
