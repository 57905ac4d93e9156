"""Benchmark: llmproxy-quota ``admit`` vs the ``limits`` library (5.x) vs a redis-py PING, on a real Redis.

Starts a throwaway redis-server (llmproxy.core.testing.RedisServer). Every variant runs against the same
server in the same run, the variants taking turns call by call, in an order shuffled for each pass (a noisy
moment of a shared machine hits all alike, and no variant always follows the same one); figures are p50/p99
latency and checks per second (1 / mean latency), sync and async, plus Redis commands per check (INFO
commandstats, commands run inside scripts included) and client round trips per check.

The quota client sends its script calls through its Redis client's write-behind (llmproxy.core), on a
connection the write-behind holds (llmproxy.core._line), not through ``execute_command``. The issue's baseline
is redis-py's own ``PING``; a ``PING`` sent the way admit is sent is shown beside it, so that what the script
itself costs can be read off too.

``--spin`` keeps one core busy with a spinning process during the run. On a small VM whose cores halt when
idle, a loopback round trip is then ~2.5x faster (no wake-up of an idle core): the same code, the other
machine state in which the fixed costs weigh most.

    .venv/bin/python bench/bench_quota.py [--quick] [--n N] [--spin]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio
import redis.connection
from limits import RateLimitItemPerDay, RateLimitItemPerMinute
from limits import strategies as sync_strategies
from limits.aio import storage as aio_storage
from limits.aio import strategies as aio_strategies
from limits.storage import RedisStorage

from llmproxy.core import RequestContext
from llmproxy.core._line import AsyncDirectLine, DirectLine
from llmproxy.core.testing import RedisServer
from llmproxy.quota import AsyncQuotaClient, QuotaClient, StaticLimits, StaticPrices, TokenEstimate
from llmproxy.ratelimit_config import (
    ApiKeyLimit,
    Budget,
    Budgets,
    EndpointLimit,
    GlobalLimit,
    ModelLimit,
    TenantRateLimitConfiguration,
)

BIG = 10**9
ESTIMATE = 500
CHAT = "/v1/chat/completions"


def config(tenant: uuid.UUID) -> TenantRateLimitConfiguration:
    return TenantRateLimitConfiguration(
        tenant_id=tenant,
        global_limit=GlobalLimit(requests_per_minute=BIG, requests_per_day=BIG, tokens_per_minute=BIG,
                                 tokens_per_day=BIG),
        api_key_limit=ApiKeyLimit(requests_per_minute=BIG, tokens_per_minute=BIG),
        endpoint_limits={
            CHAT: EndpointLimit(requests_per_minute=BIG, tokens_per_minute=BIG, burst_capacity=BIG)
        },
    )  # fmt: skip


def issue_config(tenant: uuid.UUID) -> TenantRateLimitConfiguration:
    """Only the issue's 4 limits: tenant rpm + rpd + tpm, endpoint rpm. A custom limits source may leave a
    limit unset (None, built without validation); the engine does not evaluate it."""
    full = config(tenant)
    return TenantRateLimitConfiguration.model_construct(
        tenant_id=tenant,
        global_limit=GlobalLimit.model_construct(**{**dict(full.global_limit), "tokens_per_day": None}),
        api_key_limit=full.api_key_limit,
        endpoint_limits={
            CHAT: EndpointLimit.model_construct(
                requests_per_minute=BIG, tokens_per_minute=None, burst_capacity=BIG
            )
        },
    )


def model_config(tenant: uuid.UUID, *, budget: bool) -> TenantRateLimitConfiguration:
    """The issue's 4 limits plus a per-model limit (gpt-4o's tokens per minute), and with ``budget`` a monthly
    spend budget (its cost estimated from the price table on every admit)."""
    base = issue_config(tenant)
    return base.model_copy(
        update={
            "model_limits": {"gpt-4o": ModelLimit(tokens_per_minute=BIG)},
            "budgets": Budgets(month=Budget(limit_micros=BIG * 1000)) if budget else Budgets(),
        }
    )


PRICES = StaticPrices({"gpt-4o": ("2.5", "10")})
#: the model rows' estimate: the same 500 tokens, split into prompt and reserved output, naming the model
MODEL_ESTIMATE = TokenEstimate(400, ESTIMATE - 400, "gpt-4o")

HELD_PING = "PING on a held connection (the path admit takes)"
PING = ("PING",)
OURS4 = "llmproxy admit, 4 limits (issue: tenant rpm+rpd+tpm, endpoint rpm)"
OURS4T = "llmproxy admit, 4 limits (tenant rpm+rpd+tpm+tpd)"
OURS6 = "llmproxy admit, 6 limits (tenant 4 + endpoint rpm+tpm)"
OURS4M = "llmproxy admit, 4 limits (issue) + a model limit (tpm)"
OURS4MB = "llmproxy admit, 4 limits (issue) + a model limit (tpm) + a spend budget"


# the peer's same limits: tenant rpm + rpd + tpm (cost = estimate), endpoint rpm
PEER_LIMITS = [
    (RateLimitItemPerMinute(BIG), ("tenant", "rpm"), 1),
    (RateLimitItemPerDay(BIG), ("tenant", "rpd"), 1),
    (RateLimitItemPerMinute(BIG), ("tenant", "tpm"), ESTIMATE),
    (RateLimitItemPerMinute(BIG, namespace="endpoint"), ("endpoint", CHAT), 1),
]


def counting_connections(url: str) -> tuple[redis.Redis, list[int]]:
    """A client whose connections count what they send (one write per round trip, whichever path sends it:
    ``execute_command`` or a connection held by the quota client)."""
    count = [0]

    class Counting(redis.connection.Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            count[0] += 1
            super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]

    return redis.Redis.from_url(url, connection_class=Counting), count


def counting(client: Any) -> list[int]:
    """Count the commands this client sends (its round trips)."""
    count = [0]
    original = client.execute_command

    def execute_command(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return original(*args, **kwargs)

    client.execute_command = execute_command
    return count


def commands(admin: redis.Redis) -> int:
    stats = admin.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_config|resetstat"))


def passes(count: int, n: int) -> list[list[int]]:
    """The order of the variants in each of ``n`` passes: shuffled (seeded: the same every run).

    Every variant is called once per pass, so the calls compared are a few hundred microseconds apart and
    share the machine's state: this machine drifts within tens of milliseconds by more than the differences
    measured here (the model rows' target is 0.1 x PING, ~10 us), which blocks of calls, one variant at a
    time, turned into noise of that size. The order is shuffled because a fixed one biased a variant by what
    ran before it (the row after the PINGs read ~0.15 x PING slower than the same calls elsewhere)."""
    rng = random.Random(20261204)
    out = []
    for _ in range(n):
        order = list(range(count))
        rng.shuffle(order)
        out.append(order)
    return out


def measure(fns: list[Callable[[], Any]], n: int) -> list[list[float]]:
    """Latency samples (µs) of each function: ``n`` passes, each calling every function once, in an order
    shuffled anew for each pass (see ``passes``)."""
    out: list[list[float]] = [[] for _ in fns]
    clock = time.perf_counter_ns
    for fn in fns:
        for _ in range(20):
            fn()
    for order in passes(len(fns), n):
        for j in order:
            fn = fns[j]
            t0 = clock()
            fn()
            out[j].append((clock() - t0) / 1000)
    return out


async def ameasure(fns: list[Callable[[], Awaitable[Any]]], n: int) -> list[list[float]]:
    out: list[list[float]] = [[] for _ in fns]
    clock = time.perf_counter_ns
    for fn in fns:
        for _ in range(20):
            await fn()
    for order in passes(len(fns), n):
        for j in order:
            fn = fns[j]
            t0 = clock()
            await fn()
            out[j].append((clock() - t0) / 1000)
    return out


def summary(samples: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(samples, n=100)
    return q[49], q[98], 1e6 / statistics.fmean(samples)


def per_check(admin: redis.Redis, fn: Callable[[], Any], n: int = 200) -> float:
    admin.config_resetstat()
    for _ in range(n):
        fn()
    return (commands(admin) - 0) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--n", type=int, default=None, help="checks per variant")
    parser.add_argument("--spin", action="store_true", help="keep one core busy during the run")
    args = parser.parse_args()
    n = args.n or (500 if args.quick else 4000)
    server = RedisServer().start()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.spin else None
    try:
        if spinner is not None:
            print("(one core kept busy by a spinning process)")
        run(server.url, n)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
        server.stop()


def run(url: str, n: int) -> None:
    tenant, issue_tenant, model_tenant, budget_tenant = (uuid.uuid4() for _ in range(4))
    source = StaticLimits(
        {
            tenant: config(tenant),
            issue_tenant: issue_config(issue_tenant),
            model_tenant: model_config(model_tenant, budget=False),
            budget_tenant: model_config(budget_tenant, budget=True),
        }
    )
    admin = redis.Redis.from_url(url)
    ctxs = (
        RequestContext(tenant_id=str(issue_tenant), endpoint=CHAT),
        RequestContext(tenant_id=str(tenant)),
        RequestContext(tenant_id=str(tenant), endpoint=CHAT),
        RequestContext(tenant_id=str(model_tenant), endpoint=CHAT),
        RequestContext(tenant_id=str(budget_tenant), endpoint=CHAT),
    )
    ctx4, ctx4t, ctx6, ctx4m, ctx4mb = ctxs

    ours_redis, ours_trips = counting_connections(url)
    ours = QuotaClient(ours_redis, source, prices=PRICES)
    ping_client, ping_trips = counting_connections(url)
    held_client, held_trips = counting_connections(url)
    held = DirectLine(held_client)  # the connection the quota client sends its script calls on
    # a key prefix per limiter: interleaved, fixed and moving window would share keys of different types
    fixed_storage = RedisStorage(url, key_prefix="FIXED")
    fixed_trips = counting(fixed_storage.storage)
    fixed = sync_strategies.FixedWindowRateLimiter(fixed_storage)
    moving_storage = RedisStorage(url, key_prefix="MOVING")
    moving_trips = counting(moving_storage.storage)
    moving = sync_strategies.MovingWindowRateLimiter(moving_storage)

    def peer(limiter: Any) -> Callable[[], bool]:
        return lambda: all([limiter.hit(item, *ids, cost=cost) for item, ids, cost in PEER_LIMITS])

    sync_variants: list[tuple[str, Callable[[], Any], list[int]]] = [
        ("redis-py PING", ping_client.ping, ping_trips),
        (HELD_PING, lambda: held.call(PING), held_trips),
        (OURS4, lambda: ours.admit(ctx4, ESTIMATE), ours_trips),
        (OURS4T, lambda: ours.admit(ctx4t, ESTIMATE), ours_trips),
        (OURS6, lambda: ours.admit(ctx6, ESTIMATE), ours_trips),
        (OURS4M, lambda: ours.admit(ctx4m, MODEL_ESTIMATE), ours_trips),
        (OURS4MB, lambda: ours.admit(ctx4mb, MODEL_ESTIMATE), ours_trips),
        ("limits fixed window, 4 limits (hit each)", peer(fixed), fixed_trips),
        ("limits moving window, 4 limits (hit each)", peer(moving), moving_trips),
    ]
    rows = []
    admin.flushall()
    samples = measure([fn for _, fn, _ in sync_variants], n)
    for (name, fn, trips), timings in zip(sync_variants, samples, strict=True):
        p50, p99, ops = summary(timings)
        trips[0] = 0
        cmds = per_check(admin, fn)
        rows.append(("sync", name, p50, p99, ops, cmds, trips[0] / 200))

    rows += asyncio.run(run_async(url, source, ctxs, admin, n))
    print_table(rows)
    ours.close()


async def run_async(
    url: str, source: StaticLimits, ctxs: tuple[RequestContext, ...], admin: redis.Redis, n: int
) -> list[tuple[str, str, float, float, float, float, float]]:
    ctx4, ctx4t, ctx6, ctx4m, ctx4mb = ctxs
    ours = AsyncQuotaClient(redis.asyncio.Redis.from_url(url), source, prices=PRICES)
    ping_client = redis.asyncio.Redis.from_url(url)
    held = AsyncDirectLine(redis.asyncio.Redis.from_url(url))
    fixed = aio_strategies.FixedWindowRateLimiter(
        aio_storage.RedisStorage("async+" + url, implementation="redispy", key_prefix="AFIXED")
    )
    moving = aio_strategies.MovingWindowRateLimiter(
        aio_storage.RedisStorage("async+" + url, implementation="redispy", key_prefix="AMOVING")
    )

    def peer(limiter: Any) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return all([await limiter.hit(item, *ids, cost=cost) for item, ids, cost in PEER_LIMITS])

        return check

    variants: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("redis-py PING", ping_client.ping),
        (HELD_PING, lambda: held.call(PING)),
        (OURS4, lambda: ours.admit(ctx4, ESTIMATE)),
        (OURS4T, lambda: ours.admit(ctx4t, ESTIMATE)),
        (OURS6, lambda: ours.admit(ctx6, ESTIMATE)),
        (OURS4M, lambda: ours.admit(ctx4m, MODEL_ESTIMATE)),
        (OURS4MB, lambda: ours.admit(ctx4mb, MODEL_ESTIMATE)),
        ("limits fixed window, 4 limits (hit each)", peer(fixed)),
        ("limits moving window, 4 limits (hit each)", peer(moving)),
    ]
    rows = []
    admin.flushall()
    samples = await ameasure([fn for _, fn in variants], n)
    for (name, fn), timings in zip(variants, samples, strict=True):
        p50, p99, ops = summary(timings)
        admin.config_resetstat()
        for _ in range(200):
            await fn()
        rows.append(("async", name, p50, p99, ops, commands(admin) / 200, float("nan")))
    await ours.aclose()
    await ping_client.aclose()
    await held.aclose()
    return rows


def print_table(rows: list[tuple[str, str, float, float, float, float, float]]) -> None:
    print(f"{'mode':<6} {'variant':<66} {'p50 us':>8} {'p99 us':>8} {'checks/s':>9} {'cmds':>5} {'trips':>5}")
    for mode, name, p50, p99, ops, cmds, trips in rows:
        t = "-" if trips != trips else f"{trips:.0f}"
        print(f"{mode:<6} {name:<66} {p50:8.0f} {p99:8.0f} {ops:9.0f} {cmds:5.1f} {t:>5}")
    print()
    for mode in ("sync", "async"):
        by = {name: (p50, ops) for m, name, p50, _, ops, _, _ in rows if m == mode}
        ping = by["redis-py PING"][0]
        ours4, ours4t, ours6 = by[OURS4], by[OURS4T], by[OURS6]
        for peer in ("limits fixed window, 4 limits (hit each)", "limits moving window, 4 limits (hit each)"):
            p = by[peer]
            print(f"{mode}: {peer}: ours(4, issue) is {p[0] / ours4[0]:.2f}x faster at p50 "
                  f"({ours4[1] / p[1]:.2f}x checks/s); ours(4, tenant) {p[0] / ours4t[0]:.2f}x; "
                  f"ours(6) {p[0] / ours6[0]:.2f}x")  # fmt: skip
        print(
            f"{mode}: admit p50 / PING p50 = {ours4[0] / ping:.2f} (4 limits, issue), "
            f"{ours4t[0] / ping:.2f} (4 limits, tenant), {ours6[0] / ping:.2f} (6 limits); "
            f"admit(4, issue) / PING on a held connection = {ours4[0] / by[HELD_PING][0]:.2f}"
        )
        m, mb = by[OURS4M][0] / ping, by[OURS4MB][0] / ping
        base = ours4[0] / ping
        print(
            f"{mode}: with a model limit admit p50 / PING p50 = {m:.2f} ({m - base:+.2f}); "
            f"with a model limit and a spend budget {mb:.2f} ({mb - base:+.2f}; "
            "target: within +0.10 of the 4-limit figure)"
        )
    print(
        "cmds = Redis commands per check incl. those inside scripts; "
        "trips = client round trips per check (sync)"
    )


if __name__ == "__main__":
    main()
