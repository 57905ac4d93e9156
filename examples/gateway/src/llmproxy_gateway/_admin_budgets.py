"""Spend budgets and model allow-lists under ``/admin/tenants/{tenant_id}``: the tenant's budgets and each API
key's budgets and models, with the spend so far against each budget.

Every write reads the tenant's configuration as stored (its own, or the defaults when it has none), changes
one part and stores the whole configuration through llmproxy-ratelimit-config (``upsert``), so it is cached
and invalidated like every limit: each gateway process obeys it within a second. Writes are the platform
admin's; reads are the tenant admin's too.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from llmproxy.quota import LimitResult, QuotaUnavailable
from llmproxy.ratelimit_config import (
    ApiKeyPolicy,
    Budget,
    BudgetPeriod,
    Budgets,
    TenantRateLimitConfiguration,
)

from ._admin import BackendsDep, PlatformAdminDep, TenantScopedDep, _existing_tenant, existing_key
from ._admin_limits import AllowedModels
from ._audit import audit_admin_change
from ._backends import Backends
from ._budget_alerts import budget_entity_id
from ._openapi import errors
from ._providers import GatewayError

router = APIRouter(prefix="/admin", tags=["admin: budgets and model access"])
_READ_ERRORS = errors(400, 401, 403, 404, 503)
_WRITE_ERRORS = errors(400, 401, 403, 404, 413, 503)
Period = Annotated[BudgetPeriod, Path(description="The budget's period: a calendar day or month.")]


class Spend(BaseModel):
    name: str = Field(description="The budget as quota names it, e.g. tenant.spend_per_month.")
    spent_micros: int = Field(
        description="Spent in the current period (micro-units), with what requests in flight reserved."
    )
    remaining_micros: int
    reset_at: datetime = Field(description="When the current period ends.")
    soft_threshold_reached: bool

    @classmethod
    def of(cls, result: LimitResult, budget: Budget) -> Spend:
        return cls(
            name=result.name,
            spent_micros=result.usage,
            remaining_micros=result.remaining,
            reset_at=datetime.fromtimestamp(result.reset_at, UTC),
            soft_threshold_reached=budget.limit_micros > 0 and result.usage >= budget.soft_limit_micros,
        )


class PeriodBudget(BaseModel):
    budget: Budget
    spend: Spend | None = Field(
        description="The spend so far; null only for a budget changed within the last second, which this "
        "process does not enforce yet."
    )


class BudgetsView(BaseModel):
    """The budgets of a tenant (or of one of its API keys), each with the spend of its current period."""

    tenant_id: uuid.UUID
    api_key_id: uuid.UUID | None = None
    day: PeriodBudget | None = None
    month: PeriodBudget | None = None


class ModelAccess(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allowed_models: AllowedModels | None = Field(
        description="The models the key may call (others: 403 model_not_allowed); null: every model."
    )


class KeyModelAccess(ModelAccess):
    tenant_id: uuid.UUID
    api_key_id: uuid.UUID


# -- the configuration, read and changed ------------------------------------------------------------------


async def stored_config(backends: Backends, tenant_id: uuid.UUID) -> TenantRateLimitConfiguration:
    """The tenant's configuration as stored, or the defaults: read from the database, not a cache, since a
    write changes one part of what is there now."""
    stored = await backends.limits.repository.get_by_tenant_id(tenant_id)
    return stored if stored is not None else backends.limits.defaults.for_tenant(tenant_id)


def changed(config: TenantRateLimitConfiguration, **changes: Any) -> TenantRateLimitConfiguration:
    return TenantRateLimitConfiguration.model_validate({**dict(config), **changes})


def of_period(budgets: Budgets, period: BudgetPeriod) -> Budget | None:
    return budgets.day if period is BudgetPeriod.DAY else budgets.month


def with_budget(budgets: Budgets, period: BudgetPeriod, budget: Budget | None) -> Budgets:
    return Budgets.model_validate({**dict(budgets), period.value: budget})


def with_key_policy(
    config: TenantRateLimitConfiguration, key_id: uuid.UUID, policy: ApiKeyPolicy
) -> TenantRateLimitConfiguration:
    policies = dict(config.api_keys)
    policies[str(key_id)] = policy  # (a policy restricting nothing is dropped by the configuration)
    return changed(config, api_keys=policies)


def key_policy(config: TenantRateLimitConfiguration, key_id: uuid.UUID) -> ApiKeyPolicy:
    return config.api_key_policy(str(key_id)) or ApiKeyPolicy()


def budget_name(period: BudgetPeriod, key_id: uuid.UUID | None) -> str:
    return f"{'tenant' if key_id is None else 'api_key'}.spend_per_{period.value}"


def budget_not_found(period: BudgetPeriod, key_id: uuid.UUID | None) -> GatewayError:
    whose = "the tenant" if key_id is None else f"API key {key_id}"
    return GatewayError(404, f"{whose} has no {period.value} budget", code="budget_not_found", param="period")


async def _view(
    backends: Backends, tenant_id: uuid.UUID, key_id: uuid.UUID | None, budgets: Budgets
) -> BudgetsView:
    results: tuple[LimitResult, ...] = ()
    if budgets:
        try:
            results = await backends.quota.spend(tenant_id, None if key_id is None else str(key_id))
        except QuotaUnavailable:
            raise GatewayError(
                503,
                "The spend cannot be read: the quota service is unavailable; try again shortly.",
                type="service_unavailable",
                code="quota_unavailable",
                headers={"retry-after": "1"},
            ) from None
    by_name = {r.name: r for r in results}
    periods: dict[str, PeriodBudget] = {}
    for period, budget in budgets.items():
        result = by_name.get(budget_name(period, key_id))
        spend = None if result is None else Spend.of(result, budget)
        periods[period.value] = PeriodBudget(budget=budget, spend=spend)
    return BudgetsView(tenant_id=tenant_id, api_key_id=key_id, **periods)


async def _put_budget(
    request: Request,
    backends: Backends,
    tenant_id: uuid.UUID,
    key_id: uuid.UUID | None,
    period: BudgetPeriod,
    budget: Budget | None,
) -> Budget | None:
    """Set (or with None remove) one budget; the old and new values go to the audit trail."""
    config = await stored_config(backends, tenant_id)
    if key_id is None:
        old = of_period(config.budgets, period)
        if old is None and budget is None:
            raise budget_not_found(period, key_id)
        stored = await backends.limits.upsert(
            changed(config, budgets=with_budget(config.budgets, period, budget))
        )
        new = of_period(stored.budgets, period)
    else:
        policy = key_policy(config, key_id)
        old = of_period(policy.budgets, period)
        if old is None and budget is None:
            raise budget_not_found(period, key_id)
        budgets = with_budget(policy.budgets, period, budget)
        updated = ApiKeyPolicy(allowed_models=policy.allowed_models, budgets=budgets)
        stored = await backends.limits.upsert(with_key_policy(config, key_id, updated))
        new = of_period(key_policy(stored, key_id).budgets, period)
    action = "budget.update" if budget is not None else "budget.delete"
    entity = budget_entity_id(budget_name(period, key_id), None if key_id is None else str(key_id))
    audit_admin_change(request, action, "budget", entity, old, new, tenant_id=tenant_id)
    return new


# -- the tenant's budgets ---------------------------------------------------------------------------------


@router.get(
    "/tenants/{tenant_id}/budgets",
    summary="The tenant's spend budgets, with the spend of each current period",
    responses=_READ_ERRORS,
)
async def get_tenant_budgets(tenant_id: uuid.UUID, backends: BackendsDep, _: TenantScopedDep) -> BudgetsView:
    await _existing_tenant(backends, tenant_id)
    config = await backends.limits.get(tenant_id)  # what quota enforces (its cache)
    return await _view(backends, tenant_id, None, config.budgets)


@router.put(
    "/tenants/{tenant_id}/budgets/{period}",
    summary="Set the tenant's daily or monthly spend budget (platform admin; obeyed within a second)",
    responses=_WRITE_ERRORS,
)
async def put_tenant_budget(
    tenant_id: uuid.UUID,
    period: Period,
    body: Budget,
    request: Request,
    backends: BackendsDep,
    _: PlatformAdminDep,
) -> Budget:
    await _existing_tenant(backends, tenant_id)
    stored = await _put_budget(request, backends, tenant_id, None, period, body)
    assert stored is not None
    return stored


@router.delete(
    "/tenants/{tenant_id}/budgets/{period}",
    status_code=204,
    summary="Remove the tenant's daily or monthly spend budget (platform admin)",
    response_class=Response,
    responses=_READ_ERRORS,
)
async def delete_tenant_budget(
    tenant_id: uuid.UUID, period: Period, request: Request, backends: BackendsDep, _: PlatformAdminDep
) -> Response:
    await _existing_tenant(backends, tenant_id)
    await _put_budget(request, backends, tenant_id, None, period, None)
    return Response(status_code=204)


# -- an API key's budgets and models ----------------------------------------------------------------------


@router.get(
    "/tenants/{tenant_id}/api-keys/{key_id}/budgets",
    summary="The API key's own spend budgets, with the spend of each current period",
    responses=_READ_ERRORS,
)
async def get_key_budgets(
    tenant_id: uuid.UUID, key_id: uuid.UUID, backends: BackendsDep, _: TenantScopedDep
) -> BudgetsView:
    await existing_key(backends, tenant_id, key_id)
    config = await backends.limits.get(tenant_id)
    return await _view(backends, tenant_id, key_id, key_policy(config, key_id).budgets)


@router.put(
    "/tenants/{tenant_id}/api-keys/{key_id}/budgets/{period}",
    summary="Set the API key's daily or monthly spend budget (platform admin; obeyed within a second)",
    responses=_WRITE_ERRORS,
)
async def put_key_budget(
    tenant_id: uuid.UUID,
    key_id: uuid.UUID,
    period: Period,
    body: Budget,
    request: Request,
    backends: BackendsDep,
    _: PlatformAdminDep,
) -> Budget:
    await existing_key(backends, tenant_id, key_id)
    stored = await _put_budget(request, backends, tenant_id, key_id, period, body)
    assert stored is not None
    return stored


@router.delete(
    "/tenants/{tenant_id}/api-keys/{key_id}/budgets/{period}",
    status_code=204,
    summary="Remove the API key's daily or monthly spend budget (platform admin)",
    response_class=Response,
    responses=_READ_ERRORS,
)
async def delete_key_budget(
    tenant_id: uuid.UUID,
    key_id: uuid.UUID,
    period: Period,
    request: Request,
    backends: BackendsDep,
    _: PlatformAdminDep,
) -> Response:
    await existing_key(backends, tenant_id, key_id)
    await _put_budget(request, backends, tenant_id, key_id, period, None)
    return Response(status_code=204)


@router.get(
    "/tenants/{tenant_id}/api-keys/{key_id}/models",
    summary="The models the API key may call",
    responses=_READ_ERRORS,
)
async def get_key_models(
    tenant_id: uuid.UUID, key_id: uuid.UUID, backends: BackendsDep, _: TenantScopedDep
) -> KeyModelAccess:
    await existing_key(backends, tenant_id, key_id)
    allowed = key_policy(await backends.limits.get(tenant_id), key_id).allowed_models
    models = None if allowed is None else sorted(allowed)
    return KeyModelAccess(tenant_id=tenant_id, api_key_id=key_id, allowed_models=models)


@router.put(
    "/tenants/{tenant_id}/api-keys/{key_id}/models",
    summary="Restrict the API key to these models, or with null allow every model (platform admin)",
    responses=_WRITE_ERRORS,
)
async def put_key_models(
    tenant_id: uuid.UUID,
    key_id: uuid.UUID,
    body: ModelAccess,
    request: Request,
    backends: BackendsDep,
    _: PlatformAdminDep,
) -> KeyModelAccess:
    await existing_key(backends, tenant_id, key_id)
    config = await stored_config(backends, tenant_id)
    policy = key_policy(config, key_id)
    wanted = None if body.allowed_models is None else frozenset(body.allowed_models)
    updated = ApiKeyPolicy(allowed_models=wanted, budgets=policy.budgets)
    stored = await backends.limits.upsert(with_key_policy(config, key_id, updated))
    allowed = key_policy(stored, key_id).allowed_models
    models = None if allowed is None else sorted(allowed)
    old = {"allowed_models": None if policy.allowed_models is None else sorted(policy.allowed_models)}
    audit_admin_change(
        request, "api_key.models_update", "api_key", key_id, old, {"allowed_models": models},
        tenant_id=tenant_id,
    )  # fmt: skip
    return KeyModelAccess(tenant_id=tenant_id, api_key_id=key_id, allowed_models=models)
