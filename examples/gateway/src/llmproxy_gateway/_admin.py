"""The admin API under ``/admin``: tenants and API keys, and what the other admin routers share (the
backends dependency, the policies, the 404s of a tenant and of a key). The rate-limit configuration is in
``_admin_limits.py``, budgets and model allow-lists in ``_admin_budgets.py``.

Every route names its policy (see ``_auth.py``): the platform admin (bootstrap token) may do everything, a
tenant admin (JWT with role ``tenant_admin``) only reads and manages their own tenant.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from llmproxy.auth import ApiKey, ApiKeyNotFound, require
from llmproxy.core import RequestContext, Tenant, TenantExists, TenantNotFound

from ._audit import audit_admin_change
from ._auth import PLATFORM_ADMIN_ROLE, AnyAdmin, PlatformAdmin, TenantScoped
from ._backends import Backends
from ._openapi import errors
from ._providers import GatewayError

#: A name as people write it: some visible character, no control character (PostgreSQL refuses NUL in text).
_VISIBLE_NAME = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
#: llmproxy-auth's rule for a scope (its ``normalize_scopes`` raises on anything else).
_SCOPE = r"^[A-Za-z0-9_.:*/-]{1,100}$"
#: ``offset`` is passed to the database as a 64-bit integer.
MAX_OFFSET = 2**63 - 1


def _visible_name(value: str) -> str:
    if re.fullmatch(_VISIBLE_NAME, value) is None:
        raise ValueError("must contain a visible character and no control characters (such as NUL)")
    return value.strip()


def _scope(value: str) -> str:
    if re.fullmatch(_SCOPE, value) is None:
        raise ValueError("a scope is 1-100 letters, digits or any of _.:*/-")
    return value


def _in_the_future(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None
    if utc <= datetime.now(UTC):
        raise ValueError("must be in the future")
    return utc


# The rules are checked in Python for a message that says what is wrong; the same patterns go into the
# OpenAPI document, so that generated clients and schemathesis know them. Lengths apply to what was sent
# (surrounding whitespace is stripped afterwards).
Name = Annotated[
    str,
    Field(min_length=1, max_length=200, json_schema_extra={"pattern": _VISIBLE_NAME}),
    AfterValidator(_visible_name),
]
Scope = Annotated[str, Field(json_schema_extra={"pattern": _SCOPE}), AfterValidator(_scope)]
FutureTime = Annotated[AwareDatetime, AfterValidator(_in_the_future)]


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    scopes: list[Scope] = ["api:access"]
    expires_at: FutureTime | None = Field(
        default=None, description="When the key stops working: a time in the future, with its UTC offset."
    )


class ApiKeyInfo(BaseModel):
    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    hint: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyInfo:
        return cls(
            id=key.id,
            tenant_id=key.tenant_id,
            name=key.name,
            hint=key.hint,
            scopes=sorted(key.scopes),
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
            last_used_at=key.last_used_at,
        )


class ApiKeyIssued(ApiKeyInfo):
    key: str = Field(description="The secret. Shown this once; only its hash is stored.")


async def get_backends(request: Request) -> Backends:
    backends: Backends = request.app.state.backends
    return backends


BackendsDep = Annotated[Backends, Depends(get_backends)]
PlatformAdminDep = Annotated[RequestContext, Depends(require(PlatformAdmin))]
TenantScopedDep = Annotated[RequestContext, Depends(require(TenantScoped))]
AnyAdminDep = Annotated[RequestContext, Depends(require(AnyAdmin))]

router = APIRouter(prefix="/admin", tags=["admin"])

#: A route of one tenant (``{tenant_id}`` in its path), and one that also takes a body.
_READ_ERRORS = errors(400, 401, 403, 404, 503)
_WRITE_ERRORS = errors(400, 401, 403, 404, 413, 503)


def tenant_not_found(tenant_id: uuid.UUID) -> GatewayError:
    return GatewayError(404, f"tenant {tenant_id} does not exist", code="tenant_not_found", param="tenant_id")


async def _existing_tenant(backends: Backends, tenant_id: uuid.UUID) -> Tenant:
    try:
        return await backends.tenants.get(tenant_id)
    except TenantNotFound:
        raise tenant_not_found(tenant_id) from None


def api_key_not_found(key_id: uuid.UUID) -> GatewayError:
    return GatewayError(404, f"API key {key_id} does not exist", code="api_key_not_found", param="key_id")


async def existing_key(backends: Backends, tenant_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    """The tenant's key ``key_id`` (revoked or not), else 404: another tenant's key is not found either."""
    try:
        key = await backends.api_keys.get(key_id)
    except ApiKeyNotFound:
        raise api_key_not_found(key_id) from None
    if key.tenant_id != tenant_id:
        raise api_key_not_found(key_id)
    return key


# -- tenants ------------------------------------------------------------------------------------------------


@router.post(
    "/tenants",
    status_code=201,
    summary="Create a tenant (platform admin)",
    responses=errors(400, 401, 403, 409, 413, 503),
)
async def create_tenant(
    body: TenantCreate, request: Request, backends: BackendsDep, _: PlatformAdminDep
) -> Tenant:
    try:
        tenant = await backends.tenants.create(body.name)
    except TenantExists as exc:
        raise GatewayError(409, str(exc), code="tenant_exists", param="name") from exc
    audit_admin_change(request, "tenant.create", "tenant", tenant.id, None, tenant, tenant_id=tenant.id)
    return tenant


@router.get(
    "/tenants",
    summary="List tenants (a tenant admin sees their own)",
    responses=errors(400, 401, 403, 404, 503),
)
async def list_tenants(
    backends: BackendsDep,
    ctx: AnyAdminDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[Tenant]:
    if PLATFORM_ADMIN_ROLE in ctx.roles:
        return await backends.tenants.list(limit=limit, offset=offset)
    own = await _existing_tenant(backends, ctx.tenant_id or uuid.UUID(int=0))
    return [own] if offset == 0 else []


@router.get("/tenants/{tenant_id}", summary="Get a tenant", responses=_READ_ERRORS)
async def get_tenant(tenant_id: uuid.UUID, backends: BackendsDep, _: TenantScopedDep) -> Tenant:
    return await _existing_tenant(backends, tenant_id)


@router.delete(
    "/tenants/{tenant_id}",
    status_code=204,
    summary="Delete a tenant and all it owns (platform admin)",
    responses=_READ_ERRORS,
)
async def delete_tenant(
    tenant_id: uuid.UUID, request: Request, backends: BackendsDep, _: PlatformAdminDep
) -> Response:
    old = await _existing_tenant(backends, tenant_id)
    # Revoke its keys first: deleting the tenant cascades their rows away, but copies cached in Redis and in
    # every process would otherwise keep working for minutes. If Redis cannot be told, this raises (503) and
    # the tenant is kept, so the DELETE can be retried while the keys' hashes are still known.
    await backends.api_keys.revoke_tenant(tenant_id)
    if not await backends.tenants.delete(tenant_id):
        raise tenant_not_found(tenant_id)
    await backends.limits.delete(tenant_id)  # drops every cache of its limits
    audit_admin_change(request, "tenant.delete", "tenant", tenant_id, old, None, tenant_id=tenant_id)
    return Response(status_code=204)


# -- API keys -----------------------------------------------------------------------------------------------


@router.post(
    "/tenants/{tenant_id}/api-keys",
    status_code=201,
    summary="Issue an API key (secret shown once)",
    responses=_WRITE_ERRORS,
)
async def issue_api_key(
    tenant_id: uuid.UUID, body: ApiKeyCreate, request: Request, backends: BackendsDep, _: TenantScopedDep
) -> ApiKeyIssued:
    try:
        created = await backends.api_keys.create(
            tenant_id, body.name, scopes=tuple(body.scopes), expires_at=body.expires_at
        )
    except TenantNotFound:
        raise tenant_not_found(tenant_id) from None
    info = ApiKeyInfo.of(created.key)  # never the secret
    audit_admin_change(request, "api_key.issue", "api_key", info.id, None, info, tenant_id=tenant_id)
    return ApiKeyIssued(**info.model_dump(), key=created.secret)


@router.get(
    "/tenants/{tenant_id}/api-keys",
    summary="List a tenant's API keys (never their secrets)",
    responses=_READ_ERRORS,
)
async def list_api_keys(tenant_id: uuid.UUID, backends: BackendsDep, _: TenantScopedDep) -> list[ApiKeyInfo]:
    await _existing_tenant(backends, tenant_id)
    return [ApiKeyInfo.of(key) for key in await backends.api_keys.list(tenant_id)]


@router.delete(
    "/tenants/{tenant_id}/api-keys/{key_id}",
    status_code=204,
    summary="Revoke an API key (every gateway process refuses it within a second)",
    responses=_READ_ERRORS,
)
async def revoke_api_key(
    tenant_id: uuid.UUID, key_id: uuid.UUID, request: Request, backends: BackendsDep, _: TenantScopedDep
) -> Response:
    key = await existing_key(backends, tenant_id, key_id)
    await backends.api_keys.revoke(key_id)
    old = ApiKeyInfo.of(key)
    new = old.model_copy(update={"revoked_at": datetime.now(UTC)})
    audit_admin_change(request, "api_key.revoke", "api_key", key_id, old, new, tenant_id=tenant_id)
    return Response(status_code=204)
