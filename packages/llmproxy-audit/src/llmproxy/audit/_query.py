"""Reading the audit trail: by tenant, time range, actor, action, entity; newest first, keyset-paginated.

The cursor is the last event id of a page: ids are UUIDv7, so the id alone gives the ``(event_time,
event_id)`` position the next page starts after.
"""

from __future__ import annotations

import builtins
import uuid
from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from ._chain import NO_TENANT
from ._models import AuditEvent
from ._store import aware
from ._tables import events_table as events
from ._uuid7 import is_uuid7, ms_to_datetime, uuid7_ms

MAX_PAGE = 1000


class AuditQuery(BaseModel):
    """Filters of a query. ``tenant_id`` None means events that belong to no tenant."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: uuid.UUID | None
    since: datetime | None = None
    until: datetime | None = None
    user_id: str | None = Field(default=None, max_length=200)
    action: str | None = Field(default=None, max_length=100)
    entity_type: str | None = Field(default=None, max_length=100)
    entity_id: str | None = Field(default=None, max_length=200)
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 100
    after: uuid.UUID | None = None


class StoredAuditEvent(AuditEvent):
    """An event as stored: plus its place in the tenant's chain and when the consumer stored it."""

    seq: int
    hash: str
    prev_hash: str
    recorded_at: datetime


class AuditPage(BaseModel):
    events: list[StoredAuditEvent]
    next_cursor: uuid.UUID | None


def to_stored(row: Any) -> StoredAuditEvent:
    return StoredAuditEvent.model_validate(
        {
            "schema_version": row.schema_version,
            "event_id": row.event_id,
            "timestamp": aware(row.event_time),
            "tenant_id": None if row.tenant_id == NO_TENANT else row.tenant_id,
            "actor_type": row.actor_type,
            "user_id": row.user_id,
            "api_key_id": row.api_key_id,
            "action": row.action,
            "entity_type": row.entity_type,
            "entity_id": row.entity_id,
            "old_values": row.old_values,
            "new_values": row.new_values,
            "metadata": row.metadata,
            "outcome": row.outcome,
            "request_id": row.request_id,
            "ip_address": row.ip_address,
            "user_agent": row.user_agent,
            "seq": row.seq,
            "hash": bytes(row.hash).hex(),
            "prev_hash": bytes(row.prev_hash).hex(),
            "recorded_at": aware(row.recorded_at),
        }
    )


def query_events(conn: Connection, query: AuditQuery) -> AuditPage:
    c = events.c
    stmt = sa.select(events).where(c.tenant_id == (query.tenant_id or NO_TENANT))
    if query.since is not None:
        stmt = stmt.where(c.event_time >= query.since)
    if query.until is not None:
        stmt = stmt.where(c.event_time < query.until)
    for column, value in (
        (c.user_id, query.user_id),
        (c.action, query.action),
        (c.entity_type, query.entity_type),
        (c.entity_id, query.entity_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if query.after is not None:
        if not is_uuid7(query.after):
            raise ValueError("after: not a cursor returned by this API")
        after_time = ms_to_datetime(uuid7_ms(query.after))
        stmt = stmt.where(sa.tuple_(c.event_time, c.event_id) < sa.tuple_(after_time, query.after))
    stmt = stmt.order_by(c.event_time.desc(), c.event_id.desc()).limit(query.limit + 1)
    rows = conn.execute(stmt).all()
    page = [to_stored(row) for row in rows[: query.limit]]
    more = len(rows) > query.limit
    return AuditPage(events=page, next_cursor=page[-1].event_id if more and page else None)


class AuditStore:
    """Queries over a sync engine (the consumer writes; see :class:`AuditConsumer`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def query(self, query: AuditQuery | None = None, /, **filters: Any) -> AuditPage:
        with self.engine.connect() as conn:
            return query_events(conn, query or AuditQuery(**filters))

    def all(self, tenant_id: uuid.UUID | None) -> builtins.list[StoredAuditEvent]:
        """Every event of a tenant, newest first (tests, small exports)."""
        out: builtins.list[StoredAuditEvent] = []
        after = None
        while True:
            page = self.query(AuditQuery(tenant_id=tenant_id, limit=MAX_PAGE, after=after))
            out.extend(page.events)
            if page.next_cursor is None:
                return out
            after = page.next_cursor


class AsyncAuditStore:
    """The same queries over an asyncio engine (the SQL runs through ``run_sync``)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def query(self, query: AuditQuery | None = None, /, **filters: Any) -> AuditPage:
        async with self.engine.connect() as conn:
            return await conn.run_sync(query_events, query or AuditQuery(**filters))
