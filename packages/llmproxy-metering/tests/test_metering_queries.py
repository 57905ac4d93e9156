"""Queries: buckets in a timezone, Redis or PostgreSQL per hour (never both), validation, the property."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmproxy.core import ManualClock, create_engine, redis_from_url
from llmproxy.core.testing import Backend
from llmproxy.metering import Flusher, InvalidUsageQuery, MeteringClient, UsageEvent
from llmproxy.metering._query import build_query, split_hour

HOUR = 3600


def hour_start(clock: ManualClock) -> datetime:
    return datetime.fromtimestamp(int(clock.now()) // HOUR * HOUR, UTC)


def test_usage_grouped_by_model_and_key_with_totals(
    backend: Backend, clock: ManualClock, create_tenant: Callable[[str], uuid.UUID]
) -> None:
    tenant = create_tenant(backend.database_url)
    client = MeteringClient(
        redis_from_url(backend.redis_url), engine=create_engine(backend.database_url), clock=clock
    )
    at = hour_start(clock)
    client.record(UsageEvent(tenant_id=tenant, occurred_at=at, model="a", api_key_id="k1", input_tokens=3))
    client.record(UsageEvent(tenant_id=tenant, occurred_at=at, model="a", api_key_id="k2", input_tokens=4))
    client.record(UsageEvent(tenant_id=tenant, occurred_at=at, model="b", api_key_id="k1", output_tokens=5))
    client.flush()
    report = client.get_usage(tenant, at, at + timedelta(hours=1), group_by=("model",))
    (bucket,) = report.buckets
    assert bucket.totals.requests == 3
    assert {(r.model, r.requests, r.input_tokens, r.output_tokens) for r in bucket.results} == {
        ("a", 2, 7, 0),
        ("b", 1, 0, 5),
    }
    assert bucket.by_model == {"a": 2, "b": 1}
    by_key = client.get_usage(tenant, at, at + timedelta(hours=1), group_by=("api_key_id",))
    assert {(r.api_key_id, r.requests) for r in by_key.buckets[0].results} == {("k1", 2), ("k2", 1)}
    assert by_key.buckets[0].results[0].model is None


def test_final_hours_come_from_postgresql_and_recent_ones_from_redis(
    backend: Backend, clock: ManualClock, create_tenant: Callable[[str], uuid.UUID]
) -> None:
    tenant = create_tenant(backend.database_url)
    redis = redis_from_url(backend.redis_url)
    engine = create_engine(backend.database_url)
    client = MeteringClient(redis, engine=engine, clock=clock, late_window=3 * HOUR)
    now = hour_start(clock)
    for h in range(3):
        client.record(UsageEvent(tenant_id=tenant, occurred_at=now - timedelta(hours=h), model="m"))
    client.flush()
    Flusher(redis, engine, late_window=3 * HOUR).run_once()
    # Change Redis behind the flusher's back: the answer shows which side each hour came from.
    for h in range(3):
        label = (now - timedelta(hours=h)).strftime("%Y-%m-%d-%H")
        redis.hincrby(f"metering:{{{tenant}}}:{label}", "r\tm\t\t", 100)
    report = client.get_usage(tenant, now - timedelta(hours=2), now + timedelta(hours=1))
    # the cursor is "now"; hours ending more than late_window + clock_skew before it are final: none here
    assert [b.totals.requests for b in report.buckets] == [101, 101, 101]
    later = ManualClock(clock.now())
    later_client = MeteringClient(redis, engine=engine, clock=later, late_window=HOUR, clock_skew=1)
    report = later_client.get_usage(tenant, now - timedelta(hours=2), now + timedelta(hours=1))
    # with a 1 h late window, the hour that ended over 1 h before the cursor is final: read from PostgreSQL
    assert [b.totals.requests for b in report.buckets] == [1, 101, 101]


def test_the_split_hour_is_the_first_hour_that_is_not_final() -> None:
    from llmproxy.metering import MeteringOptions

    options = MeteringOptions(late_window=HOUR, clock_skew=60)
    now = 1_000_000 * HOUR + 1234
    for cursor_s in (now - 30, now - 7200, now - 3 * HOUR - 59):
        split = split_hour(10**9, cursor_s * 1000, now, options)
        margin = options.late_window + options.clock_skew
        assert split * HOUR + margin <= cursor_s  # the hour before the split ended long enough ago: final
        assert (split + 1) * HOUR + margin > cursor_s  # the split hour itself may still change
    never_flushed = split_hour(10**9, None, now, options)
    assert never_flushed == (now - options.ttl) // HOUR + 1  # all Redis still holds comes from Redis
    assert split_hour(10**9, 0, now, options) == never_flushed


def test_redis_down_answers_from_postgresql_and_says_it_may_lag(
    proxied_backend: Backend, clock: ManualClock, create_tenant: Callable[[str], uuid.UUID]
) -> None:
    assert proxied_backend.redis_proxy is not None
    tenant = create_tenant(proxied_backend.database_url)
    redis = redis_from_url(proxied_backend.redis_url, socket_timeout=1, socket_connect_timeout=1)
    engine = create_engine(proxied_backend.database_url)
    client = MeteringClient(redis, engine=engine, clock=clock)
    at = hour_start(clock)
    client.record(UsageEvent(tenant_id=tenant, occurred_at=at, model="m"))
    client.flush()
    Flusher(redis, engine).run_once()
    proxied_backend.redis_proxy.cut()
    report = client.get_usage(tenant, at, at + timedelta(hours=1))
    assert report.complete is False
    assert report.totals.requests == 1


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"granularity": "week"}, "granularity"),
        ({"group_by": ("model", "colour")}, "group_by"),
        ({"tz": "Mars/Olympus"}, "tz"),
        ({"tz": "Asia/Kolkata"}, "tz"),  # +05:30
        ({"start": datetime(2026, 1, 1, 0, 30, tzinfo=UTC)}, "start"),
        ({"granularity": "day", "start": datetime(2026, 1, 1, 5, tzinfo=UTC)}, "start"),
        ({"granularity": "day", "end": datetime(2026, 1, 3, 5, tzinfo=UTC)}, "end"),
        ({"granularity": "month", "start": datetime(2026, 1, 2, tzinfo=UTC)}, "start"),
        ({"end": datetime(2025, 12, 1, tzinfo=UTC)}, "end"),
    ],
)
def test_a_bad_query_is_refused_naming_the_parameter(kwargs: dict[str, object], param: str) -> None:
    values: dict[str, object] = {
        "start": datetime(2026, 1, 1, tzinfo=UTC),
        "end": datetime(2026, 1, 3, tzinfo=UTC),
    }
    values.update(kwargs)
    start, end = values.pop("start"), values.pop("end")
    with pytest.raises(InvalidUsageQuery) as info:
        build_query(uuid.uuid4(), start, end, **values)  # type: ignore[arg-type]
    assert info.value.param == param


def test_days_in_a_dst_timezone_have_23_and_25_hours() -> None:
    paris = ZoneInfo("Europe/Paris")
    query = build_query(
        uuid.uuid4(),
        datetime(2026, 3, 28, tzinfo=paris),
        datetime(2026, 3, 30, tzinfo=paris),
        granularity="day",
        tz="Europe/Paris",
    )
    assert [p.last_hour - p.first_hour for p in query.periods] == [24, 23]


ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo", "Pacific/Kiritimati", "America/Sao_Paulo"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    events=st.lists(
        st.tuples(
            st.integers(0, 70 * 24 - 1),
            st.sampled_from(["a", "b", "c"]),
            st.integers(0, 1000),
            st.integers(0, 1000),
        ),
        min_size=1,
        max_size=60,
    ),
)
def test_day_and_month_sums_equal_the_hour_sums_equal_the_ground_truth(
    data: st.DataObject,
    events: list[tuple[int, str, int, int]],
    embedded_redis_url: str,
    embedded_database_url: str,
    create_tenant: Callable[[str], uuid.UUID],
) -> None:
    zone_name = data.draw(st.sampled_from(ZONES))
    zone = ZoneInfo(zone_name)
    now = int(time.time())  # the embedded Redis judges expiry by the real clock
    clock = ManualClock(float(now))
    tenant = create_tenant(embedded_database_url)
    window = 71 * 24 * HOUR
    redis, engine = redis_from_url(embedded_redis_url), create_engine(embedded_database_url)
    client = MeteringClient(
        redis, clock=clock, late_window=window, dedupe_window=window, ttl=window + 3 * HOUR
    )
    truth_requests = truth_input = 0
    base_hour = now // HOUR - 70 * 24
    for i, (h, model, inp, out) in enumerate(events):
        at = datetime.fromtimestamp((base_hour + h) * HOUR + 59, UTC)
        client.record(
            UsageEvent(
                event_id=f"e{i}",
                tenant_id=tenant,
                occurred_at=at,
                model=model,
                input_tokens=inp,
                output_tokens=out,
            )
        )
        truth_requests += 1
        truth_input += inp
    client.flush()
    Flusher(redis, engine, ttl=window + 3 * HOUR).run_once()
    # Queried with a 1 h late window: hours older than that are final and come from PostgreSQL, later ones
    # from Redis, so both sides and the split between them are exercised.
    client = MeteringClient(redis, engine=engine, clock=clock, late_window=HOUR, clock_skew=1)
    # whole local months covering every event: from the first of the month before, to the month after next
    first = datetime.fromtimestamp(base_hour * HOUR, zone)
    start = datetime(first.year, first.month, 1, tzinfo=zone) - timedelta(days=1)
    start = datetime(start.year, start.month, 1, tzinfo=zone)
    last = datetime.fromtimestamp(now, zone) + timedelta(days=32)
    end = datetime(last.year, last.month, 1, tzinfo=zone)
    answers = {
        g: client.get_usage(tenant, start, end, granularity=g, group_by=("model",), tz=zone_name)
        for g in ("hour", "day", "month")
    }
    for report in answers.values():
        assert report.totals.requests == truth_requests
        assert report.totals.input_tokens == truth_input
        assert sum(b.totals.requests for b in report.buckets) == truth_requests
        assert sum(r.input_tokens for b in report.buckets for r in b.results) == truth_input
    per_model = {
        g: {m: sum(b.by_model.get(m, 0) for b in r.buckets) for m in "abc"} for g, r in answers.items()
    }
    assert per_model["hour"] == per_model["day"] == per_model["month"]
    for bucket in answers["day"].buckets:
        assert bucket.start.hour == 0
