"""The flush, sans I/O: copy every bucket touched since the last run from Redis to PostgreSQL.

Non-destructive and idempotent. Nothing is popped or deleted from Redis; each bucket's *whole* counters are
written with "keep the greater value" per column. Redis counters only grow, so writing an older or a newer
copy of a bucket, twice, or from two flushers at once, leaves the greatest (the latest) value: a crash, a
retry or a concurrent flusher cannot lose or double count anything.

Which buckets: every tenant in the global index scored at or after ``cursor - clock_skew`` (plus, on a sweep,
every registered tenant), and of those every hour in the tenant's own index scored at or after the same
point. The cursor is the Redis time read at the start of the last run that committed; it is saved only after
every chunk is written, so a failed run is simply done again.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from llmproxy.core import Flow

from ._keys import Group, bucket_key, parse_bucket, parse_hour_label
from ._models import MeteringOptions
from ._query import ReadBuckets
from ._repository import Row

logger = logging.getLogger("llmproxy.metering.flush")


@dataclass(frozen=True, slots=True)
class RedisTimeMs:
    """Redis ``TIME`` in milliseconds."""


@dataclass(frozen=True, slots=True)
class ReadDirtyTenants:
    """Members of the global index scored at or after ``since_ms``."""

    since_ms: int


@dataclass(frozen=True, slots=True)
class ReadDirtyHours:
    """For each tenant (one pipeline), the hour labels of its index scored at or after ``since_ms``."""

    tenants: tuple[uuid.UUID, ...]
    since_ms: int


@dataclass(frozen=True, slots=True)
class LoadCursor:
    name: str


@dataclass(frozen=True, slots=True)
class SaveCursor:
    name: str
    cursor_ms: int


@dataclass(frozen=True, slots=True)
class ListTenants:
    """Every registered tenant."""


@dataclass(frozen=True, slots=True)
class KnownTenants:
    """Which of these tenants are registered (rows of others would break the foreign key)."""

    tenants: tuple[uuid.UUID, ...]


@dataclass(frozen=True, slots=True)
class UpsertHours:
    rows: tuple[Row, ...]


FlushOp = (
    RedisTimeMs
    | ReadDirtyTenants
    | ReadDirtyHours
    | ReadBuckets
    | LoadCursor
    | SaveCursor
    | ListTenants
    | KnownTenants
    | UpsertHours
)


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What one run wrote. ``unknown_tenants``: tenants with usage in Redis but no row in the registry
    (their usage cannot be stored: the table's foreign key), skipped and logged."""

    cursor_ms: int
    tenants: int
    buckets: int
    rows: int
    unknown_tenants: int
    swept: bool


def _tenant(raw: bytes | str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw.decode() if isinstance(raw, bytes) else raw)
    except ValueError:
        return None


def flush_flow(options: MeteringOptions, name: str, *, sweep: bool) -> Flow[FlushOp, FlushResult]:
    now_ms: int = yield RedisTimeMs()
    cursor: int | None = yield LoadCursor(name)
    if cursor is None:
        since, sweep = now_ms - options.ttl * 1000, True  # first run: everything Redis still holds
    else:
        since = cursor - int(options.clock_skew * 1000)
    candidates = {t for t in map(_tenant, (yield ReadDirtyTenants(since))) if t is not None}
    if sweep:
        candidates.update((yield ListTenants()))
    known: set[uuid.UUID] = set((yield KnownTenants(tuple(candidates)))) if candidates else set()
    unknown = len(candidates) - len(known)
    if unknown:
        logger.warning("%d tenant(s) have usage in Redis but are not registered: not flushed", unknown)
    tenants = sorted(known)
    chunk = options.chunk_size
    buckets: list[tuple[uuid.UUID, int]] = []
    for i in range(0, len(tenants), chunk):
        part = tuple(tenants[i : i + chunk])
        labels_per_tenant: list[list[Any]] = yield ReadDirtyHours(part, since)
        for tenant, labels in zip(part, labels_per_tenant, strict=True):
            for label in labels:
                buckets.append(
                    (tenant, parse_hour_label(label.decode() if isinstance(label, bytes) else label))
                )
    rows_written = 0
    pending: list[Row] = []
    for i in range(0, len(buckets), chunk):
        part_buckets = buckets[i : i + chunk]
        raws: list[Any] = yield ReadBuckets(tuple(bucket_key(t, h) for t, h in part_buckets))
        for (tenant, hour), raw in zip(part_buckets, raws, strict=True):
            for group, counters in parse_bucket(raw or {}).items():
                pending.append(_row(tenant, hour, group, counters))
        while len(pending) >= chunk:
            rows_written += yield UpsertHours(tuple(pending[:chunk]))
            del pending[:chunk]
    if pending:
        rows_written += yield UpsertHours(tuple(pending))
    yield SaveCursor(name, now_ms)
    return FlushResult(now_ms, len(tenants), len(buckets), rows_written, unknown, sweep)


def _row(tenant: uuid.UUID, hour: int, group: Group, counters: list[int]) -> Row:
    return (tenant, hour, group.model, group.api_key_id, group.endpoint, *counters)


def retry_delay(failures: int, interval: float) -> float:
    """Seconds to wait after ``failures`` consecutive failed runs: 0.5 s doubling, never above the interval
    (so a recovered database is caught up within one interval plus the run itself)."""
    return float(min(interval, 0.5 * 2 ** min(failures - 1, 20)))
