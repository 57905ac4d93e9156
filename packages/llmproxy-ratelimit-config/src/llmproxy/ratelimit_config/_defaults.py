"""Configured defaults: what a tenant without its own row gets."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field

from ._models import ApiKeyLimit, EndpointLimit, EndpointPath, GlobalLimit, TenantRateLimitConfiguration


class RateLimitDefaults(BaseModel):
    """The limits a tenant gets until an administrator configures its own."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    global_limit: GlobalLimit = GlobalLimit(
        requests_per_minute=1000,
        requests_per_day=100_000,
        tokens_per_minute=100_000,
        tokens_per_day=10_000_000,
    )
    api_key_limit: ApiKeyLimit = ApiKeyLimit(requests_per_minute=100, tokens_per_minute=10_000)
    endpoint_limits: dict[EndpointPath, EndpointLimit] = Field(
        default_factory=lambda: {
            "/v1/chat/completions": EndpointLimit(
                requests_per_minute=60, tokens_per_minute=100_000, burst_capacity=120
            ),
            "/v1/embeddings": EndpointLimit(
                requests_per_minute=1000, tokens_per_minute=500_000, burst_capacity=2000
            ),
        }
    )

    def for_tenant(self, tenant_id: uuid.UUID) -> TenantRateLimitConfiguration:
        return TenantRateLimitConfiguration(
            tenant_id=tenant_id,
            global_limit=self.global_limit,
            api_key_limit=self.api_key_limit,
            endpoint_limits=dict(self.endpoint_limits),
        )


DEFAULTS = RateLimitDefaults()
