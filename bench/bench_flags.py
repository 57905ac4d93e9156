"""Benchmark: flag evaluation latency, ours beside UnleashClient and OpenFeature's in-memory provider, and the
propagation time of a change across two processes.

    .venv/bin/python bench/bench_flags.py [--quick] [--no-propagation]

Evaluation: the same flags are given to every contender (the UnleashClient is bootstrapped offline from the
Unleash JSON of our definitions: no server, no background fetch, no metrics). Each figure is the per-call
time of batches of ``BATCH`` calls (one timer read per batch, so the timer's own ~60 ns does not swamp sub-
microsecond calls); p50 and p99 are over batches.

Propagation: two processes on one throwaway redis-server and a fresh PostgreSQL database; the writer
changes a flag 20 times, the reader reports when its snapshot has the new version.

Targets (issue 12): seed flag <= 2 us direct; flexibleRollout with 5 constraints <= 10 us; through
OpenFeature <= 25 us; >= 10x faster than UnleashClient on the same flags; propagation <= 1 s.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import logging
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from llmproxy.flags import Constraint, Evaluator, Feature, FeatureSet, Flag, FlagContext, Snapshot, Strategy

BATCH = 50
SEED_KEY = "llm_gateway"
FIVE_KEY = "five_constraints"
FIVE_HEAVY_KEY = "five_constraints_cidr_regex"


def per_call(n_batches: int, fn: Callable[[], object]) -> list[float]:
    """Microseconds per call, one figure per batch of ``BATCH`` calls."""
    for _ in range(200):
        fn()
    samples = []
    gc.disable()
    try:
        for _ in range(n_batches):
            start = time.perf_counter_ns()
            for _ in range(BATCH):
                fn()
            samples.append((time.perf_counter_ns() - start) / 1000 / BATCH)
    finally:
        gc.enable()
    return samples


def p50_p99(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def definitions(listed: set[str]) -> list[Feature]:
    def rollout(key: str, *constraints: Constraint) -> Feature:
        params = {"rollout": "50", "stickiness": "tenant_id", "groupId": key}
        return Feature(
            name=key,
            strategies=(Strategy(name="flexibleRollout", parameters=params, constraints=constraints),),
        )

    common = (
        Constraint(context_name="endpoint", operator="STR_STARTS_WITH", values=("/v1/",)),
        Constraint(context_name="model", operator="IN", values=("gpt-4o", "gpt-4o-mini", "claude-sonnet")),
        Constraint(context_name="plan", operator="NOT_IN", values=("free", "trial")),
    )
    return [
        Flag(key=SEED_KEY, enabled_for_tenants=listed, rollout_percentage=30).to_feature(),
        rollout(
            FIVE_KEY,
            *common,
            Constraint(context_name="seats", operator="NUM_GTE", value="5"),
            Constraint(context_name="sdk_version", operator="SEMVER_GTE", value="1.2.0"),
        ),
        rollout(
            FIVE_HEAVY_KEY,
            *common[:3],
            Constraint(
                context_name="remoteAddress", operator="IN_CIDR", values=("10.0.0.0/8", "192.168.0.0/16")
            ),
            Constraint(context_name="api_key_id", operator="REGEX", value="^key_[a-z0-9]+$"),
        ),
    ]


def evaluation(quick: bool) -> list[tuple[str, float, float, float | None]]:
    n = 400 if quick else 4000
    listed = {str(uuid.UUID(int=i + 1)) for i in range(50)}
    features = definitions(listed)
    feature_set = FeatureSet(features=tuple(features))
    properties = {"endpoint": "/v1/chat/completions", "model": "gpt-4o", "plan": "pro", "seats": "12"}
    properties |= {"sdk_version": "1.4.2", "api_key_id": "key_abc123"}
    flags = Evaluator(Snapshot(feature_set))

    def context(tenant: str) -> FlagContext:
        return FlagContext(
            tenant_id=tenant, user_id="user-1", remote_address="10.1.2.3", properties=properties
        )

    # A tenant off the allow-list that every rollout admits: each flag runs its whole rule (hash included).
    tenant = next(
        t
        for t in (str(uuid.UUID(int=10**6 + i)) for i in range(10_000))
        if all(flags.is_enabled(k, context(t)) for k in (SEED_KEY, FIVE_KEY, FIVE_HEAVY_KEY))
    )
    ctx = context(tenant)
    values = ctx.values

    rows: list[tuple[str, float, float, float | None]] = []

    def row(name: str, fn: Callable[[], object], against: str | None = None) -> None:
        """``against``: the peer row this one is compared with (ratio = peer p50 / this p50)."""
        p50, p99 = p50_p99(per_call(n, fn))
        base = next((r[1] for r in rows if r[0] == against), None) if against else None
        rows.append((name, p50, p99, base / p50 if base else None))

    def peer(key: str) -> str:
        return f"UnleashClient.is_enabled {key}"

    # -- UnleashClient (Rust engine through its Python bindings), bootstrapped offline
    unleash = unleash_client(feature_set)
    unleash_ctx = {
        "userId": "user-1",
        "remoteAddress": "10.1.2.3",
        "properties": {"tenant_id": tenant, **properties},
    }
    for key in (SEED_KEY, FIVE_KEY, FIVE_HEAVY_KEY):
        assert unleash.is_enabled(key, unleash_ctx), f"UnleashClient disagrees on {key}"
        row(f"UnleashClient.is_enabled {key}", lambda key=key: unleash.is_enabled(key, unleash_ctx))

    # -- ours
    row(
        f"ours Snapshot.is_enabled {SEED_KEY}",
        lambda: flags.snapshot.is_enabled(SEED_KEY, values),
        peer(SEED_KEY),
    )
    row(f"ours client.is_enabled {SEED_KEY}", lambda: flags.is_enabled(SEED_KEY, ctx), peer(SEED_KEY))
    row(f"ours client.is_enabled {FIVE_KEY}", lambda: flags.is_enabled(FIVE_KEY, ctx), peer(FIVE_KEY))
    # Every call with values never seen before (no help from the memoised parses of versions and numbers).
    fresh = [
        context(tenant).with_properties(sdk_version=f"1.{i + 2}.0", seats=str(i + 5)) for i in range(5000)
    ]
    cycle = itertools.cycle(fresh)
    row(
        f"ours client.is_enabled {FIVE_KEY} (new values each call)",
        lambda: flags.is_enabled(FIVE_KEY, next(cycle)),
        peer(FIVE_KEY),
    )
    row(
        f"ours client.is_enabled {FIVE_HEAVY_KEY}",
        lambda: flags.is_enabled(FIVE_HEAVY_KEY, ctx),
        peer(FIVE_HEAVY_KEY),
    )
    from llmproxy.core import RequestContext

    request = RequestContext(
        tenant_id=tenant, user_id="user-1", client_ip="10.1.2.3", endpoint="/v1/chat/completions"
    )
    row(f"ours client.is_enabled {SEED_KEY} (RequestContext)", lambda: flags.is_enabled(SEED_KEY, request))
    row(
        f"ours client.is_enabled {SEED_KEY} (new RequestContext values)",
        lambda: flags.snapshot.is_enabled(SEED_KEY, _fresh_values(request)),
    )

    # -- OpenFeature: our provider and the SDK's in-memory provider, through the same SDK client
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.flag_evaluation import FlagResolutionDetails, Reason
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

    from llmproxy.flags.openfeature import FlagsProvider

    api.set_provider(FlagsProvider(flags), "ours")
    of_ctx = EvaluationContext(targeting_key="user-1", attributes={"tenant_id": tenant, **properties})
    ours_of = api.get_client("ours")
    assert ours_of.get_boolean_value(SEED_KEY, False, of_ctx)

    def seed_rule(flag: InMemoryFlag[bool], ectx: EvaluationContext) -> FlagResolutionDetails[bool]:
        # The seed's rule written by hand for the in-memory provider, which has no targeting of its own.
        import mmh3

        t = str(ectx.attributes.get("tenant_id"))
        on = t in listed or mmh3.hash(f"{SEED_KEY}:{t}", 0, False) % 100 < 30
        return FlagResolutionDetails(on, reason=Reason.TARGETING_MATCH, variant="on" if on else "off")

    memory = InMemoryProvider(
        {
            "static": InMemoryFlag("on", {"on": True, "off": False}),
            SEED_KEY: InMemoryFlag("on", {"on": True, "off": False}, context_evaluator=seed_rule),
        }
    )
    api.set_provider(memory, "memory")
    memory_of = api.get_client("memory")
    row(
        "OpenFeature InMemoryProvider static flag",
        lambda: memory_of.get_boolean_value("static", False, of_ctx),
    )
    row(
        f"OpenFeature InMemoryProvider {SEED_KEY} (hand-written rule)",
        lambda: memory_of.get_boolean_value(SEED_KEY, False, of_ctx),
    )
    row(
        f"ours via OpenFeature {SEED_KEY}",
        lambda: ours_of.get_boolean_value(SEED_KEY, False, of_ctx),
        f"OpenFeature InMemoryProvider {SEED_KEY} (hand-written rule)",
    )
    row(
        f"ours via OpenFeature {FIVE_KEY}",
        lambda: ours_of.get_boolean_value(FIVE_KEY, False, of_ctx),
        peer(FIVE_KEY),
    )
    api.shutdown()
    unleash.destroy()
    return rows


def _fresh_values(request: Any) -> Any:
    from llmproxy.flags import request_values

    return request_values(request)


def unleash_client(feature_set: FeatureSet) -> Any:
    from UnleashClient import UnleashClient
    from UnleashClient.cache import FileCache

    logging.getLogger("UnleashClient").setLevel(logging.ERROR)
    cache = FileCache("llmproxy-bench", directory=tempfile.mkdtemp(prefix="unleash-bench-"))
    cache.bootstrap_from_dict(feature_set.unleash())
    # Never initialised: the bootstrap is the whole state, nothing polls, registers or sends metrics.
    return UnleashClient(
        url="http://127.0.0.1:9/api",
        app_name="llmproxy-bench",
        disable_metrics=True,
        disable_registration=True,
        cache=cache,
    )


def print_rows(rows: list[tuple[str, float, float, float | None]]) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"{'evaluation':<{width}}  {'p50 us':>8}  {'p99 us':>8}  {'vs peer':>8}")
    for name, p50, p99, ratio in rows:
        print(f"{name:<{width}}  {p50:8.2f}  {p99:8.2f}  {(f'{ratio:.1f}x' if ratio else ''):>8}")


def propagation(changes: int) -> None:
    """Two processes on a throwaway redis-server and a fresh migrated PostgreSQL database: this one writes,
    ``python -m llmproxy.flags watch`` in another reports when it serves each new version."""
    import json
    import select
    import subprocess

    from llmproxy.core import upgrade
    from llmproxy.core.testing import RedisServer, create_postgres_database, drop_postgres_database
    from llmproxy.flags import FlagsClient

    server = RedisServer().start()
    database = create_postgres_database()
    watcher = None
    writer = None
    try:
        upgrade(database)
        watcher = subprocess.Popen(
            [sys.executable, "-m", "llmproxy.flags", "watch", "--redis-url", server.url,
             "--database-url", database, "--seconds", "300"],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert watcher.stdout is not None

        def line(timeout: float) -> dict[str, Any]:
            ready, _, _ = select.select([watcher.stdout], [], [], timeout)  # type: ignore[list-item]
            if not ready:
                raise TimeoutError("the watcher said nothing")
            return dict(json.loads(watcher.stdout.readline()))  # type: ignore[union-attr]

        line(30)  # ready
        writer = FlagsClient.from_urls(server.url, database)
        writer.start()
        delays = []
        for i in range(changes):
            written_at = time.time()
            writer.put(Flag(key="propagated", rollout_percentage=(i % 100) + 1))
            while (seen := line(5))["version"] != writer.snapshot_version:
                pass
            delays.append((seen["at"] - written_at) * 1000)
            time.sleep(0.05)
        print(
            f"\npropagation across two processes ({changes} changes, write -> other process serving it): "
            f"p50 {statistics.median(delays):.1f} ms, max {max(delays):.1f} ms (target: <= 1000 ms)"
        )
    finally:
        if writer is not None:
            writer.close()
        if watcher is not None:
            watcher.kill()
            watcher.wait(10)
        drop_postgres_database(database)
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples (a check that the bench runs)")
    parser.add_argument("--no-propagation", action="store_true", help="skip the two-process run")
    args = parser.parse_args()
    rows = evaluation(args.quick)
    print_rows(rows)
    if not args.no_propagation:
        propagation(changes=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
