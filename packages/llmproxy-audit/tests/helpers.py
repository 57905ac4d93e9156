"""Small helpers of the audit tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import sqlalchemy as sa

from llmproxy.audit import AuditConsumer, AuditPublisher, events_table, transport_from_url
from llmproxy.core import create_engine

from .conftest import Stack


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.02) -> bool:
    """Poll a condition that depends on other processes or a broker (real I/O, not the code's clock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def publisher(stack: Stack) -> AuditPublisher:
    return AuditPublisher.from_url(stack.transport_url, stack.options)


def consumer(stack: Stack, database_url: str | None = None) -> AuditConsumer:
    return AuditConsumer(
        transport_from_url(stack.transport_url, stack.options),
        create_engine(database_url or stack.database_url),
        stack.options,
    )


def stored_ids(database_url: str, tenant: uuid.UUID | None = None) -> list[uuid.UUID]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            stmt = sa.select(events_table.c.event_id)
            if tenant is not None:
                stmt = stmt.where(events_table.c.tenant_id == tenant)
            return list(conn.execute(stmt).scalars())
    finally:
        engine.dispose()


def published(redis_url: str, options: object) -> list[bytes]:
    """The raw payloads in a Redis events stream (what left the process)."""
    from llmproxy.core import redis_from_url

    client = redis_from_url(redis_url)
    try:
        entries = client.xrange(options.stream)  # type: ignore[attr-defined]
        return [bytes(fields[b"e"]) for _id, fields in entries]  # type: ignore[union-attr]
    finally:
        client.close()
