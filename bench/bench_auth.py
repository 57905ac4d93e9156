"""Benchmark llmproxy-auth against plain pyjwt, from the same run.

    .venv/bin/python bench/bench_auth.py [--quick]

Starts a throwaway redis-server and a fresh PostgreSQL database (migrated), then measures:
- API key verification: L1 hit, Redis hit (L1 cleared), database (L1 and Redis cleared);
- JWT verification: cold (first sight of each token: parse, key lookup, signature, claims, cache insert) and
  cached (the same token again), for RS256 / ES256 / HS256, each beside plain ``jwt.decode`` with a prepared
  key on the very same tokens, interleaved call by call so that machine noise hits both alike.
Targets (issue 4): cached verification <= 10 us; cold no slower than plain pyjwt + 10 %.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt

from llmproxy.auth import ApiKeyService, JWTSettings, JWTVerifier, cache_key, hash_secret
from llmproxy.auth.testing import (
    TEST_AUDIENCE,
    TEST_HS_SECRET,
    TEST_ISSUER,
    generate_ec_key,
    generate_rsa_key,
    mint_token,
)
from llmproxy.core import TenantRegistry, create_engine, redis_from_url, upgrade
from llmproxy.core.testing import (
    RedisServer,
    create_postgres_database,
    drop_postgres_database,
    postgres_available,
)


def _stats(samples_ns: list[int]) -> tuple[float, float, float]:
    samples = sorted(samples_ns)
    p50 = samples[len(samples) // 2] / 1000
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000
    ops = 1e9 / statistics.fmean(samples)
    return p50, p99, ops


def _row(name: str, samples_ns: list[int], peer_ns: list[int] | None = None) -> str:
    p50, p99, ops = _stats(samples_ns)
    line = f"{name:<34} {p50:>9.1f} {p99:>9.1f} {ops:>11,.0f}"
    if peer_ns is not None:
        pp50, pp99, pops = _stats(peer_ns)
        line += f"   | {pp50:>9.1f} {pp99:>9.1f} {pops:>11,.0f}   x{p50 / pp50:5.2f}"
    return line


def _timed(fn: Callable[[], Any]) -> int:
    start = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - start


def bench_api_keys(n: int, redis_url: str, database_url: str) -> list[str]:
    engine = create_engine(database_url)
    tenant = TenantRegistry(engine).create(f"bench-{uuid.uuid4().hex[:6]}")
    service = ApiKeyService(engine, redis_from_url(redis_url))
    raw_redis = redis_from_url(redis_url)
    secret = service.create(tenant.id, "bench").secret
    key = cache_key(hash_secret(secret))
    service.verify(secret)
    l1 = [_timed(lambda: service.verify(secret)) for _ in range(n)]
    redis_hit: list[int] = []
    database: list[int] = []
    for _ in range(max(200, n // 20)):
        service._core.l1.clear()  # bench only: force the Redis path
        redis_hit.append(_timed(lambda: service.verify(secret)))
        service._core.l1.clear()
        raw_redis.delete(key)  # and the database path
        database.append(_timed(lambda: service.verify(secret)))
    service.close()
    raw_redis.close()
    engine.dispose()
    return [
        _row("api key: L1 hit", l1),
        _row("api key: Redis hit (L1 miss)", redis_hit),
        _row("api key: PostgreSQL (both miss)", database),
    ]


def _compare(
    ours: Callable[[str], Any], peer: Callable[[str], Any], tokens: list[str]
) -> tuple[list[int], list[int], list[int], list[int]]:
    """Interleaved call by call. Cold: each token once (first sight); hot: the first token, repeatedly."""
    ours_cold, peer_cold, ours_hot, peer_hot = [], [], [], []
    for token in tokens:
        ours_cold.append(_timed(lambda: ours(token)))  # noqa: B023 (called at once)
        peer_cold.append(_timed(lambda: peer(token)))  # noqa: B023
    first = tokens[0]
    for _ in tokens:
        ours_hot.append(_timed(lambda: ours(first)))
        peer_hot.append(_timed(lambda: peer(first)))
    return ours_cold, peer_cold, ours_hot, peer_hot


def bench_jwt(n: int) -> list[str]:
    now = time.time()
    rsa_key, ec_key = generate_rsa_key("rsa-1"), generate_ec_key("ec-1")
    settings = JWTSettings(
        issuer=TEST_ISSUER,
        audience=TEST_AUDIENCE,
        algorithms=("RS256", "ES256", "HS256"),
        keys={"rsa-1": rsa_key.public_pem, "ec-1": ec_key.public_pem, "hs": TEST_HS_SECRET},
    )
    cases: list[tuple[str, Any, Any, dict[str, Any]]] = [
        ("RS256", rsa_key, rsa_key.private.public_key(), {}),
        ("ES256", ec_key, ec_key.private.public_key(), {}),
        ("HS256", TEST_HS_SECRET.encode(), TEST_HS_SECRET.encode(), {"kid": "hs"}),
    ]
    rows: list[str] = []
    for alg, signing, peer_key, headers in cases:
        verifier = JWTVerifier(settings)
        tokens = [mint_token(signing, alg, now=now, headers=headers, jti=str(i)) for i in range(n)]

        def peer(token: str, alg: str = alg, peer_key: Any = peer_key) -> Any:
            return jwt.decode(token, peer_key, algorithms=[alg], audience=TEST_AUDIENCE, issuer=TEST_ISSUER)

        ours_cold, peer_cold, ours_hot, peer_hot = _compare(verifier.verify, peer, tokens)
        rows.append(_row(f"jwt {alg}: cold (new token)", ours_cold, peer_cold))
        rows.append(_row(f"jwt {alg}: cached (same token)", ours_hot, peer_hot))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short run")
    args = parser.parse_args()
    n = 2_000 if args.quick else 20_000

    problem = postgres_available()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    redis_server = RedisServer().start()
    database_url = create_postgres_database()
    try:
        upgrade(database_url)
        header = f"{'':<34} {'p50 us':>9} {'p99 us':>9} {'ops/s':>11}"
        print(f"llmproxy-auth, {n} iterations per row (plain pyjwt = jwt.decode with a prepared key)\n")
        print(header + f"   | {'pyjwt p50':>9} {'p99':>9} {'ops/s':>11}   ours/pyjwt p50")
        for line in bench_api_keys(n, redis_server.url, database_url):
            print(line)
        for line in bench_jwt(n):
            print(line)
    finally:
        drop_postgres_database(database_url)
        redis_server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
