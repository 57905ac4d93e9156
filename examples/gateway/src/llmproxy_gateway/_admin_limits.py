"""The rate-limit configuration of a tenant under ``/admin/tenants/{tenant_id}``: the whole of it (its tenant,
key, endpoint and model limits, spend budgets and per-key policies) read and replaced at once, reset to the
defaults, and the current usage of its tenant-wide quotas.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from llmproxy.quota import QuotaType
from llmproxy.ratelimit_config import (
    MAX_ENTRIES,
    MAX_MODEL_LENGTH,
    NO_BUDGETS,
    ApiKeyLimit,
    ApiKeyPolicy,
    Budgets,
    EndpointLimit,
    EndpointPath,
    GlobalLimit,
    ModelLimit,
    ModelName,
    TenantRateLimitConfiguration,
)

from ._admin import BackendsDep, PlatformAdminDep, TenantScopedDep, _existing_tenant
from ._audit import audit_admin_change
from ._backends import Backends
from ._openapi import errors
from ._providers import GatewayError

#: llmproxy-ratelimit-config's rule for an endpoint path, written down for the OpenAPI document.
LimitedPath = Annotated[
    EndpointPath, Field(json_schema_extra={"pattern": r"^/[^\s\x00-\x1f\x7f]*$", "maxLength": 500})
]
#: llmproxy-ratelimit-config's rule for a model name (1-200 printable characters, no whitespace), likewise.
LimitedModel = Annotated[
    ModelName,
    Field(
        json_schema_extra={
            "pattern": r"^[^\s\x00-\x1f\x7f-\x9f]+$",
            "minLength": 1,
            "maxLength": MAX_MODEL_LENGTH,
        }
    ),
]
AllowedModels = Annotated[list[LimitedModel], Field(max_length=MAX_ENTRIES)]


class KeyPolicy(BaseModel):
    """What one API key may do beyond the tenant's ``api_key_limit``: the models it may call (null: every
    model) and its own spend budgets."""

    model_config = ConfigDict(extra="forbid")

    allowed_models: AllowedModels | None = Field(
        default=None, description="The models the key may call (sorted); null: every model."
    )
    budgets: Budgets = NO_BUDGETS

    @classmethod
    def of(cls, policy: ApiKeyPolicy) -> KeyPolicy:
        allowed = None if policy.allowed_models is None else sorted(policy.allowed_models)
        return cls(allowed_models=allowed, budgets=policy.budgets)

    def policy(self) -> ApiKeyPolicy:
        allowed = None if self.allowed_models is None else frozenset(self.allowed_models)
        return ApiKeyPolicy(allowed_models=allowed, budgets=self.budgets)


class RateLimits(BaseModel):
    """A tenant's whole configuration (the body of PUT; GET adds ``tenant_id`` and ``source``)."""

    model_config = ConfigDict(extra="forbid")

    global_limit: GlobalLimit
    api_key_limit: ApiKeyLimit
    # additionalProperties false: pydantic writes the key pattern as patternProperties, which alone would
    # let any other key through.
    endpoint_limits: dict[LimitedPath, EndpointLimit] = Field(
        default_factory=dict, json_schema_extra={"additionalProperties": False}
    )
    model_limits: Annotated[dict[LimitedModel, ModelLimit], Field(max_length=MAX_ENTRIES)] = Field(
        default_factory=dict,
        description="Limits per model, tenant-wide (every key together); a null limit: not limited.",
        json_schema_extra={"additionalProperties": False},
    )
    budgets: Budgets = Field(default=NO_BUDGETS, description="The tenant's spend budgets (micro-units).")
    api_keys: Annotated[dict[uuid.UUID, KeyPolicy], Field(max_length=MAX_ENTRIES)] = Field(
        default_factory=dict,
        description="Per API key of the tenant (its id): a model allow-list and its own spend budgets.",
    )

    @classmethod
    def fields_of(cls, config: TenantRateLimitConfiguration) -> dict[str, Any]:
        """``config``'s fields as this model holds them (key policies by UUID, allow-lists sorted). The
        gateway stores policies under its keys' ids, which are UUIDs."""
        return {
            "global_limit": config.global_limit,
            "api_key_limit": config.api_key_limit,
            "endpoint_limits": config.endpoint_limits,
            "model_limits": config.model_limits,
            "budgets": config.budgets,
            "api_keys": {uuid.UUID(key): KeyPolicy.of(p) for key, p in config.api_keys.items()},
        }

    def config(self, tenant_id: uuid.UUID) -> TenantRateLimitConfiguration:
        return TenantRateLimitConfiguration(
            tenant_id=tenant_id,
            global_limit=self.global_limit,
            api_key_limit=self.api_key_limit,
            endpoint_limits=self.endpoint_limits,
            model_limits=self.model_limits,
            budgets=self.budgets,
            api_keys={str(key): p.policy() for key, p in self.api_keys.items()},
        )


class TenantRateLimits(RateLimits):
    tenant_id: uuid.UUID
    source: str = Field(description="Where the answer came from: database, default, redis, l1 or last_known.")

    @classmethod
    def of(cls, tenant_id: uuid.UUID, config: TenantRateLimitConfiguration, source: str) -> TenantRateLimits:
        return cls(tenant_id=tenant_id, source=source, **RateLimits.fields_of(config))


class QuotaUsage(BaseModel):
    current_usage: int
    limit: int
    remaining: int
    reset_at: float


class TenantUsage(BaseModel):
    tenant_id: uuid.UUID
    quotas: dict[str, QuotaUsage]


router = APIRouter(prefix="/admin", tags=["admin"])
_READ_ERRORS = errors(400, 401, 403, 404, 503)
_WRITE_ERRORS = errors(400, 401, 403, 404, 413, 503)


async def check_keys_of(backends: Backends, tenant_id: uuid.UUID, key_ids: Iterable[uuid.UUID]) -> None:
    """400 naming the first of ``key_ids`` that is not a key of the tenant (a policy for it would never
    apply)."""
    wanted = set(key_ids)
    if not wanted:
        return
    unknown = wanted - {key.id for key in await backends.api_keys.list(tenant_id)}
    if unknown:
        first = min(unknown, key=str)
        raise GatewayError(
            400, f"API key {first} is not a key of tenant {tenant_id}", code="api_key_not_found",
            param=f"api_keys.{first}",
        )  # fmt: skip


# -- rate limits and usage ----------------------------------------------------------------------------------


@router.get(
    "/tenants/{tenant_id}/rate-limits",
    summary="The tenant's rate limits (its own or the defaults)",
    responses=_READ_ERRORS,
)
async def get_rate_limits(
    tenant_id: uuid.UUID, backends: BackendsDep, _: TenantScopedDep
) -> TenantRateLimits:
    await _existing_tenant(backends, tenant_id)
    loaded = await backends.limits.get_with_source(tenant_id)
    return TenantRateLimits.of(tenant_id, loaded.config, str(loaded.source))


@router.put(
    "/tenants/{tenant_id}/rate-limits",
    summary="Set the tenant's whole configuration (platform admin; every process obeys within a second)",
    responses=_WRITE_ERRORS,
)
async def put_rate_limits(
    tenant_id: uuid.UUID, body: RateLimits, request: Request, backends: BackendsDep, _: PlatformAdminDep
) -> TenantRateLimits:
    await _existing_tenant(backends, tenant_id)
    await check_keys_of(backends, tenant_id, body.api_keys)
    old = (await backends.limits.get_with_source(tenant_id)).config
    stored = await backends.limits.upsert(body.config(tenant_id))
    audit_admin_change(
        request, "rate_limits.update", "rate_limits", tenant_id, old, stored, tenant_id=tenant_id
    )
    return TenantRateLimits.of(tenant_id, stored, "database")


@router.delete(
    "/tenants/{tenant_id}/rate-limits",
    status_code=204,
    summary="Reset the tenant to the default limits",
    responses=_READ_ERRORS,
)
async def delete_rate_limits(
    tenant_id: uuid.UUID, request: Request, backends: BackendsDep, _: PlatformAdminDep
) -> Response:
    await _existing_tenant(backends, tenant_id)
    old = (await backends.limits.get_with_source(tenant_id)).config
    await backends.limits.delete(tenant_id)
    audit_admin_change(request, "rate_limits.reset", "rate_limits", tenant_id, old, None, tenant_id=tenant_id)
    return Response(status_code=204)


@router.get(
    "/tenants/{tenant_id}/quota",
    summary="Current usage of the tenant-wide limits (quota)",
    responses=_READ_ERRORS,
)
async def get_quota_usage(tenant_id: uuid.UUID, backends: BackendsDep, _: TenantScopedDep) -> TenantUsage:
    await _existing_tenant(backends, tenant_id)
    quotas: dict[str, QuotaUsage] = {}
    for quota_type in (
        QuotaType.REQUESTS_PER_MINUTE,
        QuotaType.REQUESTS_PER_DAY,
        QuotaType.TOKENS_PER_MINUTE,
        QuotaType.TOKENS_PER_DAY,
    ):
        result = await backends.quota.check(tenant_id, quota_type, 0)
        quotas[quota_type.value] = QuotaUsage(
            current_usage=result.current_usage,
            limit=result.limit,
            remaining=result.remaining,
            reset_at=result.reset_at,
        )
    return TenantUsage(tenant_id=tenant_id, quotas=quotas)
