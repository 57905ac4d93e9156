"""Benchmark: RateLimitConfigService.get() latency for an L1 hit, a Redis hit and a database miss.

Runs on real services it starts itself: a throwaway redis-server and a fresh, migrated PostgreSQL database
(on $LLMPROXY_TEST_POSTGRES_URL's server). Each row is printed beside a baseline from the same run — the raw
operation with no policy around it (a bare cachetools lookup, a bare GET + pydantic parse, a bare repository
read) — so the ratio is what the service's cache policy costs on top of the floor.

    .venv/bin/python bench/bench_ratelimit_config.py [--quick]

Targets (from the issue): L1 <= 5 us, Redis hit <= 1 ms p99, database miss <= 50 ms p99.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import uuid
from collections.abc import Callable

import cachetools

from llmproxy.core import TenantRegistry, create_engine, redis_from_url, upgrade
from llmproxy.core.testing import RedisServer, create_postgres_database, drop_postgres_database
from llmproxy.ratelimit_config import (
    ApiKeyLimit,
    EndpointLimit,
    GlobalLimit,
    RateLimitConfigRepository,
    RateLimitConfigService,
    TenantRateLimitConfiguration,
    cache_key,
)


def config_for(tenant_id: uuid.UUID) -> TenantRateLimitConfiguration:
    endpoint = EndpointLimit(requests_per_minute=600, tokens_per_minute=1_000_000, burst_capacity=1200)
    return TenantRateLimitConfiguration(
        tenant_id=tenant_id,
        global_limit=GlobalLimit(
            requests_per_minute=10_000,
            requests_per_day=1_000_000,
            tokens_per_minute=10**6,
            tokens_per_day=10**8,
        ),
        api_key_limit=ApiKeyLimit(requests_per_minute=1000, tokens_per_minute=100_000),
        endpoint_limits={
            "/v1/chat/completions": endpoint,
            "/v1/embeddings": endpoint,
            "/v1/responses": endpoint,
        },
    )


def measure(
    n: int, op: Callable[[int], object], before: Callable[[int], object] | None = None
) -> list[float]:
    """Latencies in microseconds of ``op(i)``; ``before(i)`` runs untimed first."""
    samples: list[float] = []
    gc.disable()
    try:
        for i in range(n):
            if before is not None:
                before(i)
            start = time.perf_counter_ns()
            op(i)
            samples.append((time.perf_counter_ns() - start) / 1000)
    finally:
        gc.enable()
    return samples


def summary(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    ops = 1_000_000 / statistics.fmean(ordered)
    return p50, p99, ops


def fmt_us(us: float) -> str:
    return f"{us:,.1f} us" if us < 1000 else f"{us / 1000:,.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short run (a few seconds)")
    args = parser.parse_args()
    n_l1, n_redis, n_db = (20_000, 1_000, 300) if args.quick else (200_000, 5_000, 2_000)
    tenants_n = 50

    redis_server = RedisServer().start()
    database_url = create_postgres_database()
    try:
        upgrade(database_url)
        engine = create_engine(database_url)
        registry = TenantRegistry(engine)
        repo = RateLimitConfigRepository(engine)
        tenants = [registry.create(f"bench-{i}").id for i in range(tenants_n)]
        for tenant_id in tenants:
            repo.upsert(config_for(tenant_id))
        raw = redis_from_url(redis_server.url)

        def tenant(i: int) -> uuid.UUID:
            return tenants[i % tenants_n]

        rows: list[tuple[str, str, list[float], list[float], str]] = []

        # L1 hit: the service's L1 vs a bare cachetools TTLCache lookup.
        with RateLimitConfigService.from_urls(redis_server.url, database_url, subscribe=False) as service:
            for tenant_id in tenants:
                service.get(tenant_id)
            ours = measure(n_l1, lambda i: service.get(tenant(i)))
            bare: cachetools.TTLCache[uuid.UUID, TenantRateLimitConfiguration] = cachetools.TTLCache(
                10_000, 5.0
            )
            for tenant_id in tenants:
                bare[tenant_id] = config_for(tenant_id)
            peer = measure(n_l1, lambda i: bare.get(tenant(i)))
            rows.append(("L1 hit", "bare TTLCache.get", ours, peer, "<= 5 us (p50)"))

        # Redis hit: L1 off (l1_ttl=0), so every get is GET + parse; vs a bare GET + model_validate_json.
        with RateLimitConfigService.from_urls(
            redis_server.url, database_url, subscribe=False, l1_ttl=0
        ) as service:
            for tenant_id in tenants:
                service.get(tenant_id)
            ours = measure(n_redis, lambda i: service.get(tenant(i)))

            def bare_redis_read(i: int) -> TenantRateLimitConfiguration:
                value = raw.get(cache_key(tenant(i)))
                assert isinstance(value, bytes)
                return TenantRateLimitConfiguration.model_validate_json(value)

            peer = measure(n_redis, bare_redis_read)
            rows.append(("Redis hit", "bare GET + parse", ours, peer, "<= 1 ms (p99)"))

            # Database miss: the key deleted (untimed) before each get: GET miss + SELECTs + SET.
            ours = measure(
                n_db, lambda i: service.get(tenant(i)), before=lambda i: raw.delete(cache_key(tenant(i)))
            )
            peer = measure(n_db, lambda i: repo.get_by_tenant_id(tenant(i)))
            rows.append(("database miss", "bare repository read", ours, peer, "<= 50 ms (p99)"))

        run = "quick" if args.quick else "full"
        print(f"\nRateLimitConfigService.get() on a real redis-server + PostgreSQL ({run} run)")
        header = f"{'path':<14} {'ours p50':>10} {'ours p99':>10} {'ours ops/s':>11}   {'baseline':<21}"
        header += f" {'p50':>10} {'p99':>10} {'ops/s':>11} {'p50 ratio':>9}  target"
        print(header)
        print("-" * len(header))
        for name, peer_name, ours, peer, target in rows:
            o50, o99, oops = summary(ours)
            p50, p99, pops = summary(peer)
            print(
                f"{name:<14} {fmt_us(o50):>10} {fmt_us(o99):>10} {oops:>11,.0f}   {peer_name:<21}"
                f" {fmt_us(p50):>10} {fmt_us(p99):>10} {pops:>11,.0f} {o50 / p50:>8.2f}x  {target}"
            )
        raw.close()
        engine.dispose()
    finally:
        redis_server.stop()
        drop_postgres_database(database_url)


if __name__ == "__main__":
    main()
