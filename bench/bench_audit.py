"""Benchmark: llmproxy-audit's publisher and consumer beside naive baselines from the same run.

Starts a throwaway redis-server (llmproxy.core.testing.RedisServer) and a fresh, migrated PostgreSQL database.

1. Publish on the request path: the time of one ``publish(...)`` call (context read, redaction, validation,
   serialization, enqueue into core's write-behind), p50/p99 — async (an ASGI app's case: the write-behind
   sends from the event loop between calls) and sync (WSGI/threads: its flusher thread competes for the GIL).
   Baseline: one ``XADD`` per event, waiting for the reply (what a publisher without a queue costs).
   Targets: p50 <= 20 us, p99 <= 100 us.
2. Publisher throughput to Redis Streams: events/s from the first publish until the stream holds them all,
   on one core (one process, one event loop). Baseline: one XADD round trip per event. Target >= 30 000/s.
3. Consumer throughput into PostgreSQL with the hash chain: a pre-filled stream drained by one
   ``AuditConsumer.run`` in this process (decode, chain, one transaction per batch, ack after commit; each
   batch stored on a helper thread while the next is received), then by the ``llmproxy-audit consume``
   worker process as deployed (start-up not counted), the same with ``LLMPROXY_AUDIT_OVERLAP=false`` (one
   batch after the other: the worker before the overlap), then by two worker processes in one consumer
   group (one per core of a two-core machine). Baseline: the same events, one INSERT (and one transaction)
   per event. Target >= 20 000/s.

    .venv/bin/python bench/bench_audit.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis
import sqlalchemy as sa

from llmproxy.audit import (
    AsyncAuditPublisher,
    AuditConsumer,
    AuditEvent,
    AuditOptions,
    AuditPublisher,
    events_table,
    store_batch,
    transport_from_url,
)
from llmproxy.core import RequestContext, create_engine, upgrade, use_context
from llmproxy.core.testing import RedisServer, create_postgres_database, drop_postgres_database

OLD = {"global_limit": {"requests_per_minute": 1000, "tokens_per_minute": 100_000}, "name": "acme"}
NEW = {"global_limit": {"requests_per_minute": 5000, "tokens_per_minute": 2_000_000}, "name": "acme"}


#: events per CPU-second of this process (the figure a loaded machine disturbs least)
CPU: dict[str, float] = {}


def percentile(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * q))] / 1000


def context() -> RequestContext:
    return RequestContext(
        tenant_id=uuid.uuid4(),
        user_id="admin@example.com",
        api_key_id=None,
        client_ip="203.0.113.7",
        user_agent="python-httpx/0.27",
    )


def options(tag: str, **changes: Any) -> AuditOptions:
    return AuditOptions(
        stream=f"bench:{{{tag}}}:events", dead_letter_stream=f"bench:{{{tag}}}:dead", **changes
    )


# -- 1. publish latency ------------------------------------------------------------------------------------


async def async_publish_latency(url: str, n: int) -> list[int]:
    publisher = AsyncAuditPublisher.from_url(url, options("lat-async", buffer_size=n + 10))
    took: list[int] = []
    with use_context(context()):
        for i in range(n):
            started = time.perf_counter_ns()
            publisher.publish("ratelimit.update", "rate_limits", "t1", OLD, NEW)
            took.append(time.perf_counter_ns() - started)
            if i % 20 == 19:
                await asyncio.sleep(0)  # other requests' turns: the write-behind sends here
    await publisher.aclose()
    return sorted(took)


def sync_publish_latency(url: str, n: int) -> list[int]:
    publisher = AuditPublisher.from_url(url, options("lat-sync", buffer_size=n + 10))
    took: list[int] = []
    with use_context(context()):
        for _ in range(n):
            started = time.perf_counter_ns()
            publisher.publish("ratelimit.update", "rate_limits", "t1", OLD, NEW)
            took.append(time.perf_counter_ns() - started)
    publisher.close()
    return sorted(took)


def naive_xadd_latency(url: str, n: int) -> list[int]:
    client = redis.Redis.from_url(url)
    body = AuditEvent(action="ratelimit.update", entity_type="rate_limits", old_values=OLD, new_values=NEW)
    payload = body.model_dump_json().encode()
    took: list[int] = []
    for _ in range(n):
        started = time.perf_counter_ns()
        client.xadd("bench:naive:events", {"e": payload}, maxlen=1_000_000, approximate=True)
        took.append(time.perf_counter_ns() - started)
    client.close()
    return sorted(took)


# -- 2. publisher throughput -------------------------------------------------------------------------------


async def async_publisher_throughput(url: str, n: int) -> float:
    opts = options("tput", buffer_size=n + 10, maxlen=n * 2)
    publisher = AsyncAuditPublisher.from_url(url, opts)
    client = redis.Redis.from_url(url)
    client.delete(opts.stream)
    started, cpu = time.perf_counter(), time.process_time()
    with use_context(context()):
        for i in range(n):
            publisher.publish("ratelimit.update", "rate_limits", "t1", OLD, NEW)
            if i % 200 == 199:
                await asyncio.sleep(0)
    await publisher.flush()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    CPU["publisher"] = n / cpu
    stored = client.xlen(opts.stream)
    await publisher.aclose()
    client.close()
    assert stored == n, f"{stored} of {n} events reached the stream"
    return n / elapsed


def naive_publisher_throughput(url: str, n: int) -> float:
    client = redis.Redis.from_url(url)
    started = time.perf_counter()
    with use_context(context()):
        for _ in range(n):
            event = AuditEvent(
                action="ratelimit.update", entity_type="rate_limits", old_values=OLD, new_values=NEW
            )
            client.xadd("bench:naive2:events", {"e": event.model_dump_json()}, maxlen=n * 2, approximate=True)
    elapsed = time.perf_counter() - started
    client.close()
    return n / elapsed


# -- 3. consumer throughput --------------------------------------------------------------------------------


def fill(url: str, opts: AuditOptions, events: list[AuditEvent]) -> None:
    client = redis.Redis.from_url(url)
    client.delete(opts.stream)
    pipe = client.pipeline(transaction=False)
    for event in events:
        pipe.xadd(opts.stream, {"e": event.model_dump_json()}, maxlen=len(events) * 2, approximate=True)
    pipe.execute()
    client.close()


def make_events(n: int, tenants: int = 20) -> list[AuditEvent]:
    ids = [uuid.uuid4() for _ in range(tenants)]
    return [
        AuditEvent(
            action="ratelimit.update",
            entity_type="rate_limits",
            entity_id=str(i),
            tenant_id=ids[i % tenants],
            user_id="admin@example.com",
            actor_type="user",
            ip_address="203.0.113.7",
            old_values=OLD,
            new_values=NEW,
        )
        for i in range(n)
    ]


def consumer_throughput(redis_url: str, database_url: str, n: int) -> float:
    opts = options("consume", batch_size=1000, poll=0.01, checkpoint_key="bench-checkpoint-key-0123456789")  # type: ignore[arg-type]
    events = make_events(n)
    fill(redis_url, opts, events)
    del events  # not the consumer's: 100 000 live events would make every full GC pass of the drain walk them
    gc.collect()
    consumer = AuditConsumer(transport_from_url(redis_url, opts), create_engine(database_url), opts)
    consumer.maintain()
    started, cpu = time.perf_counter(), time.process_time()
    consumer.run(max_idle_rounds=1)  # (its last round waits `poll`, 10 ms, for more)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert consumer.stats.stored == n, consumer.stats
    consumer.stop()
    CPU["consumer"] = n / cpu
    return n / elapsed


def worker_consumer_throughput(
    redis_url: str, database_url: str, n: int, workers: int = 1, overlap: bool = True
) -> float:
    """``llmproxy-audit consume`` as deployed: ``workers`` worker processes in one consumer group, over a
    pre-filled stream. Their start-up is not counted: each batch's rows carry the time it was stored
    (``recorded_at``), and the figure is the events stored after the first batch over the time from the first
    batch to the last (with several workers, the batches of all of them)."""
    opts = options(f"worker-{workers}-{overlap}", batch_size=1000)
    events = make_events(n)
    tenants = sorted({e.tenant_id for e in events if e.tenant_id is not None})
    fill(redis_url, opts, events)
    del events
    env = {
        **os.environ,
        "LLMPROXY_DATABASE_URL": database_url,
        "LLMPROXY_AUDIT_TRANSPORT_URL": redis_url,
        "LLMPROXY_AUDIT_BATCH_SIZE": "1000",
        "LLMPROXY_AUDIT_CHECKPOINT_KEY": "bench-checkpoint-key-0123456789",
        "LLMPROXY_AUDIT_OVERLAP": "true" if overlap else "false",
    }
    cli = Path(sys.executable).with_name("llmproxy-audit")
    args = [str(cli), "consume", "--poll", "0.05", "--exit-when-idle", "3", "--stream", opts.stream,
            "--dead-letter-stream", opts.dead_letter_stream]  # fmt: skip
    processes = [subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL) for _ in range(workers)]
    for process in processes:
        if process.wait() != 0:
            raise SystemExit(f"a worker exited with {process.returncode}")
    engine = create_engine(database_url)
    with engine.connect() as conn:
        batches = conn.execute(
            sa.select(events_table.c.recorded_at, sa.func.count())
            .where(events_table.c.tenant_id.in_(tenants))
            .group_by(events_table.c.recorded_at)
            .order_by(events_table.c.recorded_at)
        ).all()
    engine.dispose()
    stored = sum(count for _, count in batches)
    assert stored == n, f"the workers stored {stored} of {n}"
    seconds = (batches[-1][0] - batches[0][0]).total_seconds()
    return (n - batches[-1][1]) / seconds


def naive_consumer_throughput(redis_url: str, database_url: str, n: int) -> float:
    """Read the stream the same way, one INSERT and one transaction per event (chain included)."""
    opts = options("naive-consume")
    events = make_events(n)
    fill(redis_url, opts, events)
    del events
    gc.collect()
    engine = create_engine(database_url)
    transport = transport_from_url(redis_url, opts)
    transport.setup()
    stored = 0
    started = time.perf_counter()
    while True:
        items = transport.receive(1000, 0.01)
        if not items:
            break
        for item in items:
            event = AuditEvent.model_validate_json(item.body)
            with engine.begin() as conn:
                store_batch(conn, [event], now_ms=int(time.time() * 1000))
            transport.ack([item])
            stored += 1
    elapsed = time.perf_counter() - started
    assert stored == n
    engine.dispose()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short run")
    args = parser.parse_args()
    n_latency = 5_000 if args.quick else 50_000
    n_tput = 20_000 if args.quick else 100_000
    n_consume = 10_000 if args.quick else 100_000
    n_naive = 2_000 if args.quick else 10_000

    server = RedisServer().start()
    database = create_postgres_database()
    try:
        upgrade(database)
        url = server.url
        print(f"llmproxy-audit benchmark ({'quick' if args.quick else 'full'} run)\n")

        print("1. publish on the request path (one call), microseconds")
        rows = [
            ("AsyncAuditPublisher.publish (enqueue)", asyncio.run(async_publish_latency(url, n_latency))),
            ("AuditPublisher.publish (enqueue, flusher thread)", sync_publish_latency(url, n_latency)),
            ("baseline: one XADD round trip per event", naive_xadd_latency(url, n_latency)),
        ]
        for name, took in rows:
            print(f"   {name:50} p50 {percentile(took, 0.5):8.1f}   p99 {percentile(took, 0.99):8.1f}")
        print("   target: p50 <= 20 us, p99 <= 100 us\n")

        print("2. publisher throughput to Redis Streams (one core), events/s")
        ours = asyncio.run(async_publisher_throughput(url, n_tput))
        naive = naive_publisher_throughput(url, n_naive * 2)
        print(f"   {'AsyncAuditPublisher -> write-behind pipelines':50} {ours:10,.0f}")
        print(f"   {'  the same per CPU-second of the publishing process':50} {CPU['publisher']:10,.0f}")
        print(
            f"   {'baseline: one XADD round trip per event':50} {naive:10,.0f}   (ours x{ours / naive:.1f})"
        )
        print("   target: >= 30 000 events/s\n")

        print("3. consumer throughput into PostgreSQL with the hash chain, events/s")
        ours = consumer_throughput(url, database, n_consume)
        worker = worker_consumer_throughput(url, database, n_consume)
        worker_sequential = worker_consumer_throughput(url, database, n_consume, overlap=False)
        workers = worker_consumer_throughput(url, database, n_consume, workers=2)
        naive = naive_consumer_throughput(url, database, n_naive)
        print(f"   {'AuditConsumer.run (batches of 1000, one transaction each)':50} {ours:10,.0f}")
        print(f"   {'  the same per CPU-second of the consumer process':50} {CPU['consumer']:10,.0f}")
        print(f"   {'llmproxy-audit consume (its own process, as deployed)':50} {worker:10,.0f}")
        print(f"   {'  the same, one batch after the other (no overlap)':50} {worker_sequential:10,.0f}")
        print(f"   {'  two such processes in one consumer group':50} {workers:10,.0f}")
        print(
            f"   {'baseline: one INSERT + transaction per event':50} {naive:10,.0f}   (x{ours / naive:.1f})"
        )
        print("   target: >= 20 000 events/s")
        engine = create_engine(database)
        with engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(events_table)).scalar_one()
        engine.dispose()
        print(f"\n   rows stored in the run: {total:,}")
    finally:
        drop_postgres_database(database)
        server.stop()


if __name__ == "__main__":
    main()
