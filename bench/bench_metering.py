"""Benchmark: metering ingest (with dedupe) against the seed's plain pipeline, the flush, and usage queries.

Runs on real services it starts itself: a throwaway redis-server and a fresh, migrated PostgreSQL database
(on $LLMPROXY_TEST_POSTGRES_URL's server). Figures:

- ingest, events/s on one core (this process; Redis on another): ours, ``AsyncMeteringClient.record``
  of prebuilt events through core's write-behind (the dedupe script, one EVALSHA per event), against the
  seed's batch, a pipelined ``HINCRBY`` x3 + ``EXPIRE`` per event, in pipelines of the same size, same run.
  Building and validating the ``UsageEvent`` (the caller's cost) is shown on its own line.
- flush: seconds to copy N distinct buckets to PostgreSQL (one ``Flusher.run_once``).
- ``get_usage`` over 30 days by day (in Europe/Paris), the normal split (the last day from Redis, the rest
  from PostgreSQL): p50 / p99.

    .venv/bin/python bench/bench_metering.py [--quick]

Targets (from the issue): ingest >= 25 000 events/s and >= 0.8x the plain pipeline; get_usage <= 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from llmproxy.core import (
    TenantRegistry,
    async_redis_from_url,
    create_engine,
    redis_from_url,
    tenants_table,
    upgrade,
)
from llmproxy.core.testing import RedisServer, create_postgres_database, drop_postgres_database
from llmproxy.metering import AsyncMeteringClient, Flusher, MeteringClient, UsageEvent

BATCH = 1000  # events per pipeline, ours and the peer's


def events(tenant: uuid.UUID, n: int, now: datetime) -> list[UsageEvent]:
    return [
        UsageEvent(
            event_id=f"e{i}",
            tenant_id=tenant,
            occurred_at=now,
            model=("gpt-4o-mini", "gpt-4o")[i % 2],
            api_key_id="key-1",
            endpoint="/v1/chat/completions",
            input_tokens=100 + i % 50,
            output_tokens=20 + i % 7,
        )
        for i in range(n)
    ]


async def ingest_ours(url: str, batch: list[UsageEvent]) -> float:
    redis = async_redis_from_url(url)
    client = AsyncMeteringClient(redis)
    await client.record_now(batch[0])  # load the script, open the connection
    start = time.perf_counter()
    for i in range(1, len(batch), BATCH):
        for event in batch[i : i + BATCH]:
            client.record(event)
        await client.flush()
    elapsed = time.perf_counter() - start
    assert client.write_behind.stats.dropped == 0
    assert client.write_behind.stats.failed == 0
    await client.write_behind.aclose()
    await redis.aclose()
    return (len(batch) - 1) / elapsed


async def ingest_plain(url: str, batch: list[UsageEvent]) -> float:
    """The seed's batch: HINCRBY requests / input_tokens / output_tokens + EXPIRE per event, no dedupe."""
    redis = async_redis_from_url(url)
    await redis.ping()
    start = time.perf_counter()
    for i in range(0, len(batch), BATCH):
        pipe = redis.pipeline(transaction=False)
        for event in batch[i : i + BATCH]:
            key = f"seed:{{{event.tenant_id}}}:{event.occurred_at:%Y-%m-%d-%H}"
            pipe.hincrby(key, "requests", 1)
            pipe.hincrby(key, "input_tokens", event.input_tokens)
            pipe.hincrby(key, "output_tokens", event.output_tokens)
            pipe.expire(key, 7 * 86400)
        await pipe.execute()
    elapsed = time.perf_counter() - start
    await redis.aclose()
    return len(batch) / elapsed


def build_rate(tenant: uuid.UUID, n: int, now: datetime) -> float:
    start = time.perf_counter()
    events(tenant, n, now)
    return n / (time.perf_counter() - start)


def flush_figure(redis_url: str, database_url: str, buckets: int) -> tuple[float, int]:
    engine = create_engine(database_url)
    tenants = [uuid.uuid4() for _ in range(max(1, buckets // 100))]
    with engine.begin() as conn:
        conn.execute(
            sa.insert(tenants_table),
            [{"id": t, "name": f"t{t.hex}", "created_at": datetime.now(UTC)} for t in tenants],
        )
    window = 101 * 3600
    client = MeteringClient(redis_from_url(redis_url), late_window=window, dedupe_window=window)
    now = datetime.now(UTC)
    for tenant in tenants:
        for h in range(100):
            client.record(
                UsageEvent(tenant_id=tenant, occurred_at=now - timedelta(hours=h), model="m", input_tokens=h)
            )
    client.flush(timeout=120)
    flusher = Flusher(redis_from_url(redis_url), engine)
    start = time.perf_counter()
    result = flusher.run_once()
    elapsed = time.perf_counter() - start
    engine.dispose()
    return elapsed, result.buckets


def query_figures(redis_url: str, database_url: str, runs: int) -> tuple[float, float, int]:
    engine = create_engine(database_url)
    tenant = TenantRegistry(engine).create(f"query-{uuid.uuid4().hex[:8]}").id
    window = 32 * 86400
    recorder = MeteringClient(
        redis_from_url(redis_url), late_window=window, dedupe_window=window, ttl=window + 7200
    )
    now = datetime.now(UTC)
    for h in range(31 * 24):
        for model in ("gpt-4o-mini", "gpt-4o", "o3"):
            recorder.record(
                UsageEvent(
                    tenant_id=tenant,
                    occurred_at=now - timedelta(hours=h),
                    model=model,
                    api_key_id=f"k{h % 3}",
                    input_tokens=10,
                    output_tokens=2,
                )
            )
    recorder.flush(timeout=60)
    Flusher(redis_from_url(redis_url), engine, ttl=window + 7200).run_once()
    client = MeteringClient(redis_from_url(redis_url), engine=engine)  # the default options: 24 h late window
    from zoneinfo import ZoneInfo

    paris = ZoneInfo("Europe/Paris")
    today = datetime.now(paris).replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = today - timedelta(days=29), today + timedelta(days=1)
    samples, cpu = [], []
    report = None
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        report = client.get_usage(
            tenant, start, end, granularity="day", group_by=("model",), tz="Europe/Paris"
        )
        samples.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    engine.dispose()
    samples.sort()
    assert report is not None
    print(
        f"  get_usage: this process's CPU per query, p50 {statistics.median(cpu):.2f} ms "
        "(the rest of the wall time is waiting on PostgreSQL and Redis)"
    )
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1], len(report.buckets)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: check that the bench runs")
    parser.add_argument("--rounds", type=int, default=None, help="ingest rounds (alternating ours / peer)")
    args = parser.parse_args()
    n_events = 20_000 if args.quick else 200_000
    rounds = args.rounds or (3 if args.quick else 5)
    n_buckets = 10_000 if args.quick else 100_000
    runs = 50 if args.quick else 300

    server = RedisServer().start()
    database_url = create_postgres_database()
    try:
        upgrade(database_url)
        now = datetime.now(UTC)
        ours, plain = [], []
        for _ in range(rounds):  # alternate, so machine noise hits both alike
            redis_from_url(server.url).flushall()
            ours.append(asyncio.run(ingest_ours(server.url, events(uuid.uuid4(), n_events, now))))
            plain.append(asyncio.run(ingest_plain(server.url, events(uuid.uuid4(), n_events, now))))
        ours_m, plain_m = statistics.median(ours), statistics.median(plain)
        print(f"ingest, {n_events} events x {rounds} rounds, pipelines of {BATCH} (medians):")
        print(f"  ours  (record + dedupe script) : {ours_m:10,.0f} events/s   target >= 25,000")
        print(f"  peer  (HINCRBY x3 + EXPIRE)    : {plain_m:10,.0f} events/s")
        print(f"  ratio ours / peer              : {ours_m / plain_m:10.2f}          target >= 0.80")
        print(f"  building UsageEvent (caller)   : {build_rate(uuid.uuid4(), 20_000, now):10,.0f} events/s")
        redis_from_url(server.url).flushall()
        seconds, flushed = flush_figure(server.url, database_url, n_buckets)
        print(f"flush: {flushed} buckets in {seconds:.2f} s ({flushed / seconds:,.0f} buckets/s)")
        p50, p99, buckets = query_figures(server.url, database_url, runs)
        print(
            f"get_usage, 30 days by day in Europe/Paris ({buckets} buckets), {runs} runs: "
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms   target <= 20 ms"
        )
    finally:
        server.stop()
        drop_postgres_database(database_url)


if __name__ == "__main__":
    main()
