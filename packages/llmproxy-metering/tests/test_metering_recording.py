"""Recording: the seed's key layout, deduplication, the time window, cost, and the write-behind path."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from llmproxy.core import ManualClock, async_redis_from_url, redis_from_url
from llmproxy.metering import (
    AsyncMeteringClient,
    EventOutsideWindow,
    MeteringClient,
    MeteringOptions,
    PriceBook,
    PriceOverride,
    UsageEvent,
    bucket_key,
    dirty_key,
    hour_label,
    seen_key,
)


def event(tenant: uuid.UUID, at: datetime, **fields: object) -> UsageEvent:
    values: dict[str, object] = {"model": "gpt-4o-mini", "input_tokens": 100, "output_tokens": 20}
    values.update(fields)
    return UsageEvent(tenant_id=tenant, occurred_at=at, **values)  # type: ignore[arg-type]


def now_of(clock: ManualClock) -> datetime:
    return datetime.fromtimestamp(clock.now(), UTC)


def test_an_event_lands_in_the_seeds_hourly_hash_with_its_fields_and_a_7_day_ttl(
    redis_url: str, clock: ManualClock
) -> None:
    redis = redis_from_url(redis_url)
    client = MeteringClient(redis, clock=clock)
    tenant = uuid.uuid4()
    at = now_of(clock)
    client.record(event(tenant, at, api_key_id="key-1"))
    client.flush()
    hour = int(at.timestamp()) // 3600
    key = f"metering:{{{tenant}}}:{at.strftime('%Y-%m-%d-%H')}"
    assert bucket_key(tenant, hour) == key
    fields = {k.decode(): int(v) for k, v in redis.hgetall(key).items()}
    assert fields["requests"] == 1
    assert fields["input_tokens"] == 100
    assert fields["output_tokens"] == 20
    assert fields["model:gpt-4o-mini"] == 1
    assert fields["r\tgpt-4o-mini\tkey-1\t"] == 1
    assert fields["i\tgpt-4o-mini\tkey-1\t"] == 100
    expected_ttl = (hour + 1) * 3600 + 7 * 86400 - clock.now()
    assert abs(redis.ttl(key) - expected_ttl) <= 5
    assert redis.zscore(dirty_key(tenant), hour_label(hour)) is not None
    assert redis.ttl(seen_key(tenant, hour)) > 0


def test_the_same_event_id_counts_once(redis_url: str, clock: ManualClock) -> None:
    redis = redis_from_url(redis_url)
    client = MeteringClient(redis, clock=clock)
    tenant = uuid.uuid4()
    first = event(tenant, now_of(clock), event_id="req-1")
    assert client.record_now(first) is True
    assert client.record_now(first) is False
    client.record(first)
    client.flush()
    raw = redis.hgetall(bucket_key(tenant, int(first.occurred_at.timestamp()) // 3600))
    assert int(raw[b"requests"]) == 1
    assert int(raw[b"input_tokens"]) == 100


def test_distinct_event_ids_each_count(redis_url: str, clock: ManualClock) -> None:
    redis = redis_from_url(redis_url)
    client = MeteringClient(redis, clock=clock)
    tenant = uuid.uuid4()
    at = now_of(clock)
    for i in range(5):
        client.record(event(tenant, at, event_id=f"req-{i}"))
    client.flush()
    raw = redis.hgetall(bucket_key(tenant, int(at.timestamp()) // 3600))
    assert int(raw[b"requests"]) == 5
    assert client.stats.recorded == 5


def test_an_event_later_than_the_late_window_is_rejected_and_counted(clock: ManualClock) -> None:
    client = MeteringClient(redis_from_url("memory://late"), clock=clock, late_window=3600)
    tenant = uuid.uuid4()
    with pytest.raises(EventOutsideWindow, match="late_window") as info:
        client.record(event(tenant, now_of(clock) - timedelta(seconds=3601)))
    assert info.value.field == "occurred_at"
    client.record(event(tenant, now_of(clock) - timedelta(seconds=3599)))
    assert client.stats.rejected_late == 1
    assert client.stats.recorded == 1


def test_an_event_beyond_the_future_window_is_rejected_and_counted(clock: ManualClock) -> None:
    client = MeteringClient(redis_from_url("memory://future"), clock=clock)
    tenant = uuid.uuid4()
    with pytest.raises(EventOutsideWindow, match="future_window"):
        client.record(event(tenant, now_of(clock) + timedelta(seconds=301)))
    client.record(event(tenant, now_of(clock) + timedelta(seconds=299)))
    assert client.stats.rejected_future == 1


def test_an_unknown_model_gets_no_cost_and_is_counted_never_priced_at_zero(
    redis_url: str, clock: ManualClock
) -> None:
    redis = redis_from_url(redis_url)
    client = MeteringClient(redis, clock=clock)  # no catalog, no overrides: nothing is priced
    tenant = uuid.uuid4()
    at = now_of(clock)
    client.record(event(tenant, at, model="my-own-model"))
    client.flush()
    raw = redis.hgetall(bucket_key(tenant, int(at.timestamp()) // 3600))
    assert b"cost_micros" not in raw
    assert int(raw[b"unpriced_requests"]) == 1
    assert client.stats.unpriced == 1


def test_an_override_prices_the_event_in_integer_micro_units(redis_url: str, clock: ManualClock) -> None:
    redis = redis_from_url(redis_url)
    prices = PriceBook(
        overrides=[
            PriceOverride(
                model="m",
                input_per_mtok=Decimal("2.5"),
                output_per_mtok=Decimal("10"),
                cached_input_per_mtok=Decimal("1.25"),
            )
        ]
    )
    client = MeteringClient(redis, clock=clock, prices=prices)
    tenant = uuid.uuid4()
    at = now_of(clock)
    client.record(event(tenant, at, model="m", input_tokens=1000, cached_input_tokens=400, output_tokens=30))
    client.flush()
    raw = redis.hgetall(bucket_key(tenant, int(at.timestamp()) // 3600))
    # 600 x 2.5 + 400 x 1.25 + 30 x 10 micro-units
    assert int(raw[b"cost_micros"]) == 1500 + 500 + 300
    assert b"unpriced_requests" not in raw


async def test_the_async_client_records_through_the_write_behind(redis_url: str, clock: ManualClock) -> None:
    redis = async_redis_from_url(redis_url)
    client = AsyncMeteringClient(redis, clock=clock)
    tenant = uuid.uuid4()
    at = now_of(clock)
    assert client.record(event(tenant, at)) is True
    assert client.write_behind.stats.enqueued >= 1
    await client.aclose()
    raw = await redis.hgetall(bucket_key(tenant, int(at.timestamp()) // 3600))
    assert int(raw[b"requests"]) == 1
    await redis.aclose()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", ""),
        ("model", "x" * 201),
        ("model", "bad\tname"),
        ("endpoint", "/v1/\x00"),
        ("input_tokens", -1),
        ("input_tokens", 10**13),
        ("input_tokens", "12"),
        ("occurred_at", datetime(2030, 1, 1)),
        ("event_id", ""),
    ],
)
def test_bad_input_is_refused_naming_the_field(field: str, value: object) -> None:
    values: dict[str, object] = {"tenant_id": uuid.uuid4(), "occurred_at": datetime.now(UTC), field: value}
    with pytest.raises(ValidationError) as info:
        UsageEvent(**values)  # type: ignore[arg-type]
    assert field in str(info.value)


def test_cached_tokens_cannot_exceed_input_tokens() -> None:
    with pytest.raises(ValidationError, match="cached_input_tokens"):
        UsageEvent(
            tenant_id=uuid.uuid4(), occurred_at=datetime.now(UTC), input_tokens=1, cached_input_tokens=2
        )


def test_a_ttl_shorter_than_the_late_window_and_flush_is_refused() -> None:
    with pytest.raises(ValidationError, match="ttl"):
        MeteringOptions(ttl=86400, late_window=86400)
    with pytest.raises(ValidationError, match="flush_interval"):
        MeteringOptions(flush_interval=0)
    assert MeteringOptions(ttl=2 * 86400).ttl == 2 * 86400
