"""Admin API for metering: a tenant's usage (OpenAI organization Usage API shape) and price overrides.

``GET /admin/tenants/{id}/usage`` answers a page of time buckets, each with its results grouped by
``model`` / ``api_key_id`` / ``endpoint``: ``input_tokens``, ``output_tokens``, ``input_cached_tokens``,
``num_model_requests`` and the cost (exact integer micro-units, and as an amount in USD). The route that
answered the tenant's current *quota* usage there before moved to ``/admin/tenants/{id}/quota``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from llmproxy.auth import require
from llmproxy.core import RequestContext
from llmproxy.metering import InvalidUsageQuery, PriceOverride, UsageGroup, UsageReport

from ._admin import BackendsDep, _existing_tenant
from ._audit import audit_admin_change
from ._auth import PlatformAdmin, TenantScoped
from ._metering import GatewayMetering
from ._openapi import errors
from ._providers import GatewayError

router = APIRouter(prefix="/admin", tags=["admin: usage and prices"])
TenantScopedDep = Annotated[RequestContext, Depends(require(TenantScoped))]
PlatformAdminDep = Annotated[RequestContext, Depends(require(PlatformAdmin))]
_GRANULARITY = {"hour": "hour", "1h": "hour", "day": "day", "1d": "day", "month": "month"}


async def get_metering(request: Request) -> GatewayMetering:
    metering: GatewayMetering = request.app.state.metering
    return metering


MeteringDep = Annotated[GatewayMetering, Depends(get_metering)]


class Amount(BaseModel):
    value: float
    currency: Literal["usd"] = "usd"


class UsageResult(BaseModel):
    object: Literal["organization.usage.completions.result"] = "organization.usage.completions.result"
    input_tokens: int
    output_tokens: int
    input_cached_tokens: int
    output_reasoning_tokens: int
    num_model_requests: int
    model: str | None
    api_key_id: str | None
    endpoint: str | None
    cost_micros: int = Field(description="Exact cost in millionths of a USD (priced requests only).")
    amount: Amount
    unpriced_requests: int = Field(description="Requests of models without a price: not in the cost.")

    @classmethod
    def of(cls, group: UsageGroup) -> UsageResult:
        return cls(
            input_tokens=group.input_tokens,
            output_tokens=group.output_tokens,
            input_cached_tokens=group.cached_input_tokens,
            output_reasoning_tokens=group.reasoning_tokens,
            num_model_requests=group.requests,
            model=group.model,
            api_key_id=group.api_key_id,
            endpoint=group.endpoint,
            cost_micros=group.cost_micros,
            amount=Amount(value=group.cost_micros / 1_000_000),
            unpriced_requests=group.unpriced_requests,
        )


class UsageBucketOut(BaseModel):
    object: Literal["bucket"] = "bucket"
    start_time: int
    end_time: int
    start_time_iso: str
    results: list[UsageResult]


class UsagePage(BaseModel):
    object: Literal["page"] = "page"
    data: list[UsageBucketOut]
    has_more: bool
    next_page: str | None
    complete: bool = Field(description="False when Redis was unreachable: the latest hours may lag.")


def _moment(value: str, param: str) -> datetime:
    text = value.strip()
    try:
        if text.lstrip("-").isdigit():
            return datetime.fromtimestamp(int(text), UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise GatewayError(
            400, f"{param} must be unix seconds or an ISO 8601 time", code="invalid_usage_query", param=param
        ) from None
    return parsed


def _page(report: UsageReport, offset: int, limit: int) -> UsagePage:
    buckets = report.buckets[offset : offset + limit]
    more = offset + limit < len(report.buckets)
    return UsagePage(
        data=[
            UsageBucketOut(
                start_time=int(b.start.timestamp()),
                end_time=int(b.end.timestamp()),
                start_time_iso=b.start.isoformat(),
                results=[UsageResult.of(r) for r in b.results],
            )
            for b in buckets
        ],
        has_more=more,
        next_page=str(offset + limit) if more else None,
        complete=report.complete,
    )


@router.get(
    "/tenants/{tenant_id}/usage",
    summary="The tenant's metered usage in time buckets",
    responses=errors(400, 401, 403, 404, 503),
)
async def get_usage(
    tenant_id: uuid.UUID,
    backends: BackendsDep,
    metering: MeteringDep,
    _: TenantScopedDep,
    start: Annotated[str, Query(max_length=40, description="Unix seconds or ISO 8601, inclusive")],
    end: Annotated[str, Query(max_length=40, description="Unix seconds or ISO 8601, exclusive")],
    granularity: Annotated[str, Query(max_length=8, description="hour (1h), day (1d) or month")] = "day",
    group_by: Annotated[
        list[str] | None, Query(max_length=3, description="model, api_key_id, endpoint")
    ] = None,
    tz: Annotated[str, Query(max_length=64, description="IANA timezone of the buckets")] = "UTC",
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    page: Annotated[str | None, Query(max_length=12, pattern=r"^[0-9]+$")] = None,
) -> UsagePage:
    await _existing_tenant(backends, tenant_id)
    groups = [g.strip() for item in group_by or () for g in item.split(",") if g.strip()]
    resolved = _GRANULARITY.get(granularity)
    if resolved is None:
        raise GatewayError(400, "granularity must be hour, day or month", code="invalid_usage_query",
                           param="granularity")  # fmt: skip
    try:
        report = await metering.client.get_usage(
            tenant_id,
            _moment(start, "start"),
            _moment(end, "end"),
            granularity=resolved,
            group_by=groups,
            tz=tz,
        )
    except InvalidUsageQuery as exc:
        raise GatewayError(400, str(exc), code="invalid_usage_query", param=exc.param) from exc
    return _page(report, int(page or 0), limit)


# -- price overrides (platform admin) -----------------------------------------------------------------------


#: A price in USD: a number, or a decimal string (exact), from 0 to 1 000 000 with at most 9 decimal places.
#: The document says so (pydantic's own schema for a Decimal admits any string, so fuzzers sent "").
Price = Annotated[
    Decimal,
    Field(ge=0, le=1_000_000, max_digits=18, decimal_places=9),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 1_000_000},
                {"type": "string", "pattern": r"^(0|[1-9][0-9]{0,5})(\.[0-9]{1,9})?$"},
            ]
        }
    ),
]


class PriceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_per_mtok: Price
    cached_input_per_mtok: Price | None = None
    output_per_mtok: Price
    per_request: Price = Decimal(0)


def _override(tenant_id: uuid.UUID | None, model: str, body: PriceBody) -> PriceOverride:
    try:
        return PriceOverride(tenant_id=tenant_id, model=model, **body.model_dump())
    except ValueError as exc:
        raise GatewayError(400, str(exc).splitlines()[0], code="invalid_price", param="model") from exc


async def _tenant_or_global(backends: Any, tenant_id: uuid.UUID | None) -> None:
    if tenant_id is not None:
        await _existing_tenant(backends, tenant_id)


@router.get(
    "/price-overrides",
    summary="Price overrides (platform admin); ?tenant_id= for one tenant's",
    responses=errors(400, 401, 403, 404, 503),
)
async def list_price_overrides(
    backends: BackendsDep,
    metering: MeteringDep,
    _: PlatformAdminDep,
    tenant_id: uuid.UUID | None = None,
    every: bool = False,
) -> list[PriceOverride]:
    await _tenant_or_global(backends, tenant_id)
    return await metering.overrides.list(tenant_id, every=every)


@router.put(
    "/price-overrides/{model:path}",
    summary="Set a model's price (platform admin)",
    responses=errors(400, 401, 403, 404, 413, 503),
)
async def put_price_override(
    model: str,
    body: PriceBody,
    request: Request,
    backends: BackendsDep,
    metering: MeteringDep,
    _: PlatformAdminDep,
    tenant_id: uuid.UUID | None = None,
) -> PriceOverride:
    await _tenant_or_global(backends, tenant_id)
    old = await metering.overrides.get(tenant_id, model)
    stored = await metering.overrides.put(_override(tenant_id, model, body))
    await metering.client.refresh_prices()  # this process at once; the others within the refresh interval
    audit_admin_change(request, "price.update", "price_override", model, old, stored, tenant_id=tenant_id)
    return stored


@router.delete(
    "/price-overrides/{model:path}",
    status_code=204,
    summary="Remove a price override",
    responses=errors(400, 401, 403, 404, 503),
)
async def delete_price_override(
    model: str,
    request: Request,
    backends: BackendsDep,
    metering: MeteringDep,
    _: PlatformAdminDep,
    tenant_id: uuid.UUID | None = None,
) -> Response:
    await _tenant_or_global(backends, tenant_id)
    old = await metering.overrides.get(tenant_id, model)
    if not await metering.overrides.delete(tenant_id, model):
        raise GatewayError(
            404, f"no price override for {model!r}", code="price_override_not_found", param="model"
        )
    await metering.client.refresh_prices()
    audit_admin_change(request, "price.delete", "price_override", model, old, None, tenant_id=tenant_id)
    return Response(status_code=204)
