"""``GET /admin/tenants/{tenant_id}/audit`` and ``GET /admin/audit`` (the platform's): keyset pages."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request

from llmproxy.audit import AuditPage, AuditQuery
from llmproxy.audit._uuid7 import is_uuid7

from ._admin import PlatformAdminDep, TenantScopedDep
from ._audit import GatewayAudit
from ._openapi import errors
from ._providers import GatewayError

router = APIRouter(prefix="/admin", tags=["admin"])

Text = Annotated[str | None, Query(min_length=1, max_length=200)]
Since = Annotated[datetime | None, Query(description="events at or after this time")]
Until = Annotated[datetime | None, Query(description="events before this time")]
Actor = Annotated[str | None, Query(min_length=1, max_length=200, description="user id of the actor")]
Action = Annotated[str | None, Query(min_length=1, max_length=100)]
EntityType = Annotated[str | None, Query(min_length=1, max_length=100)]
Limit = Annotated[int, Query(ge=1, le=1000)]
#: A cursor is an event id, a UUIDv7: the document says so, since any other UUID is refused with 400.
UUID7 = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-7[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$"
Cursor = Annotated[
    uuid.UUID | None,
    Query(
        description="next_cursor of the previous page (an event id: a UUIDv7)",
        json_schema_extra={"pattern": UUID7},
    ),
]


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)  # a time without a zone is read as UTC


@router.get(
    "/tenants/{tenant_id}/audit",
    summary="The tenant's audit trail (newest first; pass next_cursor as cursor for the next page)",
    responses=errors(400, 401, 403, 404, 503),
)
async def get_audit(
    tenant_id: uuid.UUID,
    request: Request,
    _: TenantScopedDep,
    since: Since = None,
    until: Until = None,
    actor: Actor = None,
    action: Action = None,
    entity_type: EntityType = None,
    entity_id: Text = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> AuditPage:
    return await _page(request, tenant_id, since, until, actor, action, entity_type, entity_id, limit, cursor)


@router.get(
    "/audit",
    summary="The platform's own trail: changes of no tenant (flags, global prices; platform admin)",
    responses=errors(400, 401, 403, 404, 503),
)
async def get_platform_audit(
    request: Request,
    _: PlatformAdminDep,
    since: Since = None,
    until: Until = None,
    actor: Actor = None,
    action: Action = None,
    entity_type: EntityType = None,
    entity_id: Text = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> AuditPage:
    return await _page(request, None, since, until, actor, action, entity_type, entity_id, limit, cursor)


async def _page(
    request: Request,
    tenant_id: uuid.UUID | None,
    since: datetime | None,
    until: datetime | None,
    actor: str | None,
    action: str | None,
    entity_type: str | None,
    entity_id: str | None,
    limit: int,
    cursor: uuid.UUID | None,
) -> AuditPage:
    audit: GatewayAudit | None = getattr(request.app.state, "audit", None)
    if audit is None:
        raise GatewayError(404, "the audit trail is not enabled on this gateway", code="not_found")
    if cursor is not None and not is_uuid7(cursor):
        raise GatewayError(
            400, "cursor: not a cursor returned by this API", code="invalid_value", param="cursor"
        )
    query = AuditQuery(
        tenant_id=tenant_id,
        since=_utc(since),
        until=_utc(until),
        user_id=actor,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        limit=limit,
        after=cursor,
    )
    return await audit.store.query(query)
