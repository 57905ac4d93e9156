"""The flags admin API: definitions under ``/admin/flags`` (platform admin), a tenant's evaluated flags under
``/admin/tenants/{id}/flags`` (the tenant's admin or the platform admin).

A definition is validated as a whole before anything is written: an unknown operator, a regex RE2 refuses,
variant weights not summing to 1000, a dependency on a missing flag or more than 30 constraints is a 400
naming the field, and the stored set is left as it was. A change is served by every gateway process within
about a second (Redis pub/sub; a polled version key behind it).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from llmproxy.auth import require
from llmproxy.core import RequestContext, TenantNotFound
from llmproxy.flags import (
    AsyncFlagsClient,
    Dependency,
    Feature,
    Flag,
    FlagContext,
    FlagNotFound,
    InvalidFlagSet,
    StoredFlag,
    Strategy,
    Variant,
    VersionConflict,
)

from ._audit import audit_admin_change
from ._auth import PlatformAdmin, TenantScoped
from ._errors import describe_validation_error
from ._openapi import errors
from ._providers import GatewayError

FlagKey = Annotated[str, Path(min_length=1, max_length=200, description="The flag's key")]
ExpectedVersion = Annotated[
    int | None,
    Query(ge=0, description="Write only if the flag is at this version (0: only if it does not exist yet)."),
]


class FeatureBody(BaseModel):
    """An Unleash feature definition (its key is the path's). camelCase or snake_case field names."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    enabled: bool = True
    description: str | None = Field(default=None, max_length=10_000)
    type: str | None = None
    project: str | None = None
    strategies: list[Strategy] = Field(default_factory=list, max_length=30)
    variants: list[Variant] = Field(default_factory=list, max_length=100)
    dependencies: list[Dependency] = Field(default_factory=list, max_length=30)
    impression_data: bool = False


class SimpleFlagBody(BaseModel):
    """The seed's flag: off globally -> off; listed tenant -> on; rollout > 0 -> that share of tenants;
    else the default."""

    model_config = ConfigDict(extra="forbid")

    globally_enabled: bool = True
    enabled_for_tenants: list[uuid.UUID] = Field(default_factory=list, max_length=10_000)
    rollout_percentage: int = Field(0, ge=0, le=100)
    default_value: bool = False
    description: str | None = Field(default=None, max_length=10_000)


class StoredFlagInfo(BaseModel):
    key: str
    version: int = Field(description="The flag's own version (1 when created, +1 per change).")
    created_at: datetime
    updated_at: datetime
    updated_by: str | None
    definition: dict[str, Any] = Field(description="The Unleash feature definition.")
    simple: dict[str, Any] | None = Field(None, description="The seed's shape, when the flag has it.")

    @classmethod
    def of(cls, stored: StoredFlag) -> StoredFlagInfo:
        simple = Flag.from_feature(stored.feature)
        return cls(
            key=stored.key,
            version=stored.version,
            created_at=stored.created_at,
            updated_at=stored.updated_at,
            updated_by=stored.updated_by,
            definition=stored.feature.unleash(),
            simple=simple.model_dump(mode="json", exclude={"key"}) if simple else None,
        )


class FlagList(BaseModel):
    served_version: str = Field(description="The flag set version this process serves.")
    ready: bool
    flags: list[StoredFlagInfo]


class EvaluatedFlag(BaseModel):
    enabled: bool
    variant: str
    reason: str


class TenantFlags(BaseModel):
    tenant_id: uuid.UUID
    served_version: str
    flags: dict[str, EvaluatedFlag]


async def get_flags(request: Request) -> AsyncFlagsClient:
    flags: AsyncFlagsClient = request.app.state.backends.flags
    return flags


FlagsDep = Annotated[AsyncFlagsClient, Depends(get_flags)]
PlatformAdminDep = Annotated[RequestContext, Depends(require(PlatformAdmin))]
TenantScopedDep = Annotated[RequestContext, Depends(require(TenantScoped))]

router = APIRouter(prefix="/admin", tags=["flags"])


def _who(ctx: RequestContext) -> str:
    return ctx.user_id or ctx.api_key_id or "platform-admin"


async def _store(
    flags: AsyncFlagsClient, feature: Feature, ctx: RequestContext, expected: int | None
) -> StoredFlag:
    try:
        return await flags.put(feature, updated_by=_who(ctx), expected_version=expected)
    except InvalidFlagSet as exc:
        raise GatewayError(400, str(exc), code="invalid_flag_set", param="dependencies") from None
    except VersionConflict as exc:
        raise GatewayError(409, str(exc), code="version_conflict", param="expected_version") from None


def _definition(key: str, build: Any) -> Feature:
    try:
        feature: Feature = build()
    except ValidationError as exc:
        message, param, code = describe_validation_error(exc.errors())
        raise GatewayError(400, message, code=code, param=param) from None
    except ValueError as exc:
        raise GatewayError(400, str(exc), code="invalid_flag", param="key") from None
    if feature.name != key:
        raise GatewayError(400, "the flag key is the path's", param="key")
    return feature


@router.get(
    "/flags", summary="List stored flag definitions (platform admin)", responses=errors(401, 403, 503)
)
async def list_flags(flags: FlagsDep, _: PlatformAdminDep) -> FlagList:
    stored = await flags.repository.list()
    return FlagList(
        served_version=flags.snapshot_version, ready=flags.ready, flags=[StoredFlagInfo.of(f) for f in stored]
    )


@router.get(
    "/flags/{key}",
    summary="Get a stored flag definition (platform admin)",
    responses=errors(400, 401, 403, 404, 503),
)
async def get_flag(key: FlagKey, flags: FlagsDep, _: PlatformAdminDep) -> StoredFlagInfo:
    stored = await flags.repository.get(key)
    if stored is None:
        raise GatewayError(404, f"no flag {key!r}", code="flag_not_found", param="key")
    return StoredFlagInfo.of(stored)


@router.put(
    "/flags/{key}",
    summary="Create or replace a flag from an Unleash feature definition (platform admin)",
    responses=errors(400, 401, 403, 409, 413, 503),
)
async def put_flag(
    key: FlagKey,
    body: FeatureBody,
    request: Request,
    flags: FlagsDep,
    ctx: PlatformAdminDep,
    expected_version: ExpectedVersion = None,
) -> StoredFlagInfo:
    feature = _definition(
        key, lambda: Feature.model_validate({"name": key, **body.model_dump(by_alias=True)})
    )
    return await _store_audited(request, flags, feature, ctx, expected_version)


@router.put(
    "/flags/{key}/simple",
    summary="Create or replace a flag in the seed's simple shape (platform admin)",
    responses=errors(400, 401, 403, 409, 413, 503),
)
async def put_simple_flag(
    key: FlagKey,
    body: SimpleFlagBody,
    request: Request,
    flags: FlagsDep,
    ctx: PlatformAdminDep,
    expected_version: ExpectedVersion = None,
) -> StoredFlagInfo:
    feature = _definition(key, lambda: Flag(key=key, **body.model_dump()).to_feature())
    return await _store_audited(request, flags, feature, ctx, expected_version)


async def _store_audited(
    request: Request, flags: AsyncFlagsClient, feature: Feature, ctx: RequestContext, expected: int | None
) -> StoredFlagInfo:
    old = await flags.repository.get(feature.name)
    stored = StoredFlagInfo.of(await _store(flags, feature, ctx, expected))
    before = None if old is None else StoredFlagInfo.of(old)
    audit_admin_change(request, "flag.update" if old else "flag.create", "flag", feature.name, before, stored)
    return stored


@router.delete(
    "/flags/{key}",
    status_code=204,
    summary="Delete a flag (its code default, if any, applies again; platform admin)",
    response_class=Response,
    responses=errors(400, 401, 403, 404, 409, 503),
)
async def delete_flag(
    key: FlagKey,
    request: Request,
    flags: FlagsDep,
    ctx: PlatformAdminDep,
    expected_version: ExpectedVersion = None,
) -> Response:
    old = await flags.repository.get(key)
    try:
        await flags.delete(key, updated_by=_who(ctx), expected_version=expected_version)
    except FlagNotFound:
        raise GatewayError(404, f"no flag {key!r}", code="flag_not_found", param="key") from None
    except InvalidFlagSet as exc:
        raise GatewayError(400, str(exc), code="invalid_flag_set", param="key") from None
    except VersionConflict as exc:
        raise GatewayError(409, str(exc), code="version_conflict", param="expected_version") from None
    audit_admin_change(request, "flag.delete", "flag", key, None if old is None else StoredFlagInfo.of(old))
    return Response(status_code=204)


@router.get(
    "/tenants/{tenant_id}/flags",
    summary="Every flag as evaluated for the tenant",
    responses=errors(400, 401, 403, 404, 503),
)
async def tenant_flags(
    tenant_id: uuid.UUID,
    request: Request,
    flags: FlagsDep,
    _: TenantScopedDep,
    model: Annotated[str | None, Query(max_length=200, description="Evaluate as for this model")] = None,
) -> TenantFlags:
    try:
        await request.app.state.backends.tenants.get(tenant_id)
    except TenantNotFound:
        raise GatewayError(
            404, f"tenant {tenant_id} does not exist", code="tenant_not_found", param="tenant_id"
        ) from None
    ctx = FlagContext(tenant_id=tenant_id, properties={"model": model} if model else {})
    snapshot = flags.snapshot
    evaluated = {}
    for key in sorted(snapshot):
        evaluation = snapshot.explain(key, ctx.values)
        if evaluation is not None:
            evaluated[key] = EvaluatedFlag(
                enabled=evaluation.enabled, variant=evaluation.variant.name, reason=evaluation.reason
            )
    return TenantFlags(tenant_id=tenant_id, served_version=snapshot.version, flags=evaluated)
