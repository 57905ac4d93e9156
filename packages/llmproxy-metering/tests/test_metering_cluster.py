"""Redis Cluster: recording, flushing and querying across a local 3-master cluster."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from llmproxy.core import ManualClock, create_engine, redis_from_url
from llmproxy.metering import Flusher, MeteringClient, UsageEvent

pytestmark = pytest.mark.slow


def test_usage_recorded_on_a_cluster_is_flushed_and_queried_exactly(
    redis_cluster_url: str,
    real_database_url: str,
    clock: ManualClock,
    create_tenant: Callable[[str], uuid.UUID],
) -> None:
    tenants = [create_tenant(real_database_url) for _ in range(12)]  # spread over the three masters' slots
    redis = redis_from_url(redis_cluster_url)
    engine = create_engine(real_database_url)
    client = MeteringClient(redis, engine=engine, clock=clock)
    now = datetime.fromtimestamp(int(clock.now()) // 3600 * 3600, UTC)
    for i, tenant in enumerate(tenants):
        for h in range(3):
            event = UsageEvent(
                event_id=f"e{h}",
                tenant_id=tenant,
                occurred_at=now - timedelta(hours=h),
                model="m",
                input_tokens=i + 1,
            )
            client.record(event)
            client.record(event)  # a duplicate: counted once
    client.flush()
    assert client.write_behind.stats.failed == 0
    result = Flusher(redis, engine).run_once()
    assert result.buckets == 36
    later = MeteringClient(redis, engine=engine, clock=clock, late_window=60, clock_skew=1)
    for i, tenant in enumerate(tenants):
        report = later.get_usage(tenant, now - timedelta(hours=2), now + timedelta(hours=1))
        assert [b.totals.requests for b in report.buckets] == [1, 1, 1]
        assert report.totals.input_tokens == 3 * (i + 1)
    engine.dispose()
