"""Monthly partitions of ``audit.audit_events`` on PostgreSQL: created ahead by the worker, dropped by
retention.

SQLite has one plain table; every function here is a no-op there (retention deletes rows instead).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

PARENT = "audit.audit_events"
_NAME = re.compile(r"^audit_events_p(\d{4})(\d{2})$")
_LOCK_KEY = zlib.crc32(b"llmproxy.audit.partitions")

Month = tuple[int, int]


def month_of(when: datetime) -> Month:
    return when.year, when.month


def add_months(month: Month, count: int) -> Month:
    index = month[0] * 12 + (month[1] - 1) + count
    return index // 12, index % 12 + 1


def month_start(month: Month) -> datetime:
    return datetime(month[0], month[1], 1, tzinfo=UTC)


def partition_name(month: Month) -> str:
    return f"audit_events_p{month[0]:04d}{month[1]:02d}"


def is_postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def existing_partitions(conn: Connection) -> set[Month]:
    if not is_postgres(conn):
        return set()
    rows = conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:parent AS regclass)"
        ),
        {"parent": PARENT},
    )
    found: set[Month] = set()
    for (name,) in rows:
        match = _NAME.match(name)
        if match:
            found.add((int(match.group(1)), int(match.group(2))))
    return found


def create_partitions(conn: Connection, months: Iterable[Month]) -> list[Month]:
    """Create the missing monthly partitions among ``months``; returns those created. Serialised across
    workers."""
    if not is_postgres(conn):
        return []
    wanted = sorted(set(months))
    if not wanted:
        return []
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    have = existing_partitions(conn)
    created = []
    for month in wanted:
        if month in have:
            continue
        start, end = month_start(month), month_start(add_months(month, 1))
        conn.execute(
            sa.text(
                f'CREATE TABLE IF NOT EXISTS audit."{partition_name(month)}" PARTITION OF {PARENT} '
                f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
            )
        )
        created.append(month)
    return created


def drop_partitions_before(conn: Connection, cutoff: Month) -> list[Month]:
    """Drop every partition whose month is before ``cutoff``; returns the months dropped."""
    if not is_postgres(conn):
        return []
    dropped = []
    for month in sorted(existing_partitions(conn)):
        if month < cutoff:
            conn.execute(sa.text(f'DROP TABLE audit."{partition_name(month)}"'))
            dropped.append(month)
    return dropped
