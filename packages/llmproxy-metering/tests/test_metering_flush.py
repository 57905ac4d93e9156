"""The flusher: every touched bucket written, whole totals, idempotent, never destructive."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from llmproxy.core import ManualClock, create_engine, redis_from_url
from llmproxy.core.testing import Backend
from llmproxy.metering import Flusher, MeteringClient, UsageEvent, bucket_key, usage_hourly_table


def stored(database_url: str) -> dict[tuple[uuid.UUID, int, str, str, str], tuple[int, ...]]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(usage_hourly_table)).all()
    finally:
        engine.dispose()
    return {tuple(r[:5]): tuple(r[5:]) for r in rows}  # type: ignore[misc]


def test_a_flush_writes_every_bucket_total_and_a_second_flush_changes_nothing(
    backend: Backend, clock: ManualClock, create_tenant: Callable[[str], uuid.UUID]
) -> None:
    tenant = create_tenant(backend.database_url)
    redis = redis_from_url(backend.redis_url)
    client = MeteringClient(redis, clock=clock)
    now = datetime.fromtimestamp(clock.now(), UTC)
    for i in range(3):
        client.record(
            UsageEvent(
                tenant_id=tenant,
                occurred_at=now - timedelta(hours=i),
                model="a",
                api_key_id="k",
                input_tokens=10 * (i + 1),
                output_tokens=1,
            )
        )
    client.record(UsageEvent(tenant_id=tenant, occurred_at=now, model="b", input_tokens=5))
    client.flush()
    engine = create_engine(backend.database_url)
    flusher = Flusher(redis, engine)
    result = flusher.run_once()
    assert result.buckets == 3
    first = stored(backend.database_url)
    hour = int(now.timestamp()) // 3600
    assert first[(tenant, hour, "a", "k", "")][:3] == (1, 10, 1)
    assert first[(tenant, hour, "b", "", "")][:3] == (1, 5, 0)
    assert first[(tenant, hour - 2, "a", "k", "")][:3] == (1, 30, 1)
    flusher.run_once()
    assert stored(backend.database_url) == first
    assert redis.exists(bucket_key(tenant, hour)) == 1  # never deleted
    engine.dispose()


def test_later_events_raise_the_stored_totals_on_the_next_flush(
    backend: Backend, clock: ManualClock, create_tenant: Callable[[str], uuid.UUID]
) -> None:
    tenant = create_tenant(backend.database_url)
    redis = redis_from_url(backend.redis_url)
    client = MeteringClient(redis, clock=clock)
    engine = create_engine(backend.database_url)
    flusher = Flusher(redis, engine)
    now = datetime.fromtimestamp(clock.now(), UTC)
    client.record(UsageEvent(tenant_id=tenant, occurred_at=now, model="a", input_tokens=1))
    client.flush()
    flusher.run_once()
    client.record(UsageEvent(tenant_id=tenant, occurred_at=now, model="a", input_tokens=2))
    client.flush()
    flusher.run_once(sweep=False)
    hour = int(now.timestamp()) // 3600
    assert stored(backend.database_url)[(tenant, hour, "a", "", "")][:2] == (2, 3)
    engine.dispose()


def test_ten_thousand_buckets_touched_in_one_interval_are_all_flushed(
    backend: Backend, clock: ManualClock, create_tenant: Callable[[str], uuid.UUID]
) -> None:
    tenants = [create_tenant(backend.database_url) for _ in range(100)]
    redis = redis_from_url(backend.redis_url)
    client = MeteringClient(redis, clock=clock)
    now = datetime.fromtimestamp(clock.now(), UTC)
    # 100 tenants x 100 hours (the window is opened wide for the test)
    client = MeteringClient(redis, clock=clock, late_window=101 * 3600, dedupe_window=101 * 3600)
    for tenant in tenants:
        for h in range(100):
            client.record(
                UsageEvent(
                    tenant_id=tenant, occurred_at=now - timedelta(hours=h), model="m", input_tokens=h + 1
                )
            )
    client.flush()
    assert client.write_behind.stats.dropped == 0
    engine = create_engine(backend.database_url)
    result = Flusher(redis, engine, chunk_size=700).run_once()
    assert result.buckets == 10_000
    rows = stored(backend.database_url)
    assert len(rows) == 10_000
    assert sum(v[1] for v in rows.values()) == 100 * sum(range(1, 101))
    engine.dispose()


def test_a_tenant_missing_from_the_registry_is_skipped_and_counted(
    backend: Backend, clock: ManualClock, create_tenant: Callable[[str], uuid.UUID]
) -> None:
    known = create_tenant(backend.database_url)
    stranger = uuid.uuid4()
    redis = redis_from_url(backend.redis_url)
    client = MeteringClient(redis, clock=clock)
    now = datetime.fromtimestamp(clock.now(), UTC)
    client.record(UsageEvent(tenant_id=known, occurred_at=now, model="m"))
    client.record(UsageEvent(tenant_id=stranger, occurred_at=now, model="m"))
    client.flush()
    engine = create_engine(backend.database_url)
    result = Flusher(redis, engine).run_once()
    assert result.unknown_tenants == 1
    assert {key[0] for key in stored(backend.database_url)} == {known}
    engine.dispose()


def test_a_lost_index_entry_is_caught_by_the_sweep(
    backend: Backend, clock: ManualClock, create_tenant: Callable[[str], uuid.UUID]
) -> None:
    tenant = create_tenant(backend.database_url)
    redis = redis_from_url(backend.redis_url)
    engine = create_engine(backend.database_url)
    flusher = Flusher(redis, engine)
    flusher.run_once()
    client = MeteringClient(redis, clock=clock)
    client.record(UsageEvent(tenant_id=tenant, occurred_at=datetime.fromtimestamp(clock.now(), UTC)))
    client.flush()
    redis.delete("metering:dirty-tenants")  # as if the index write had been lost
    assert flusher.run_once(sweep=False).buckets == 0
    assert flusher.run_once(sweep=True).buckets == 1
    assert len(stored(backend.database_url)) == 1
    engine.dispose()
