"""The admin API under ``/admin``: tenants, API keys, rate-limit configuration, current usage."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, StringConstraints

from llmproxy.core import AsyncTenantRegistry, Tenant, TenantExists, TenantNotFound

from ._providers import GatewayError

TenantName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: TenantName


def get_tenants(request: Request) -> AsyncTenantRegistry:
    registry: AsyncTenantRegistry = request.app.state.tenants
    return registry


TenantsDep = Annotated[AsyncTenantRegistry, Depends(get_tenants)]

router = APIRouter(prefix="/admin", tags=["admin"])


def tenant_not_found(tenant_id: uuid.UUID) -> GatewayError:
    return GatewayError(404, f"tenant {tenant_id} does not exist", code="tenant_not_found", param="tenant_id")


@router.post("/tenants", status_code=201, summary="Create a tenant")
async def create_tenant(body: TenantCreate, tenants: TenantsDep) -> Tenant:
    try:
        return await tenants.create(body.name)
    except TenantExists as exc:
        raise GatewayError(409, str(exc), code="tenant_exists", param="name") from exc


@router.get("/tenants", summary="List tenants")
async def list_tenants(
    tenants: TenantsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[Tenant]:
    return await tenants.list(limit=limit, offset=offset)


@router.get("/tenants/{tenant_id}", summary="Get a tenant")
async def get_tenant(tenant_id: uuid.UUID, tenants: TenantsDep) -> Tenant:
    try:
        return await tenants.get(tenant_id)
    except TenantNotFound:
        raise tenant_not_found(tenant_id) from None


@router.delete("/tenants/{tenant_id}", status_code=204, summary="Delete a tenant and everything it owns")
async def delete_tenant(tenant_id: uuid.UUID, tenants: TenantsDep) -> Response:
    if not await tenants.delete(tenant_id):
        raise tenant_not_found(tenant_id)
    return Response(status_code=204)
