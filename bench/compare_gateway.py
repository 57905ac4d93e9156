"""Two builds of the gateway side by side: this checkout's and a baseline's, in interleaved rounds.

bench_gateway.py compares one build's apps with each other; a change's cost over time needs two builds
measured in the same machine state. This serves four apps: the baseline's ``serve`` and ``serve --bare``
(from the baseline's own ``llmproxy-gateway``), and this build's ``serve --without ...`` (auth + quota, what
the gateway was before flags, metering, audit and observability joined it) and ``serve --bare``. Each round
loads the four in turn, plain and streaming, at one connection (latency) and ``--concurrency`` connections
(throughput), with bench_gateway's raw HTTP/1.1 loader in another process. What is compared is what
bench_gateway reports: p50 added over the same build's bare app, and core / bare throughput; the absolute
figures are printed too (a change in the bare app shows there).

    # a baseline build, once: a worktree of the commit with its own virtualenv
    git worktree add /tmp/base 9ea63fa && python3 -m venv /tmp/base/.venv
    /tmp/base/.venv/bin/pip install -e '/tmp/base/packages/llmproxy-core[testing]' ... \
        -e /tmp/base/examples/gateway
    .venv/bin/python bench/compare_gateway.py /tmp/base/.venv/bin/llmproxy-gateway [--rounds 5] [--duration 5]

Needs real Redis + PostgreSQL (each build migrates a database of its own; Redis is shared, keys per tenant).
"""

from __future__ import annotations

import argparse
import multiprocessing
import secrets
import shlex
import statistics
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_gateway as bg  # the loader, the servers' start-up and environment, the key

from llmproxy.core.testing import (
    RedisServer,
    create_postgres_database,
    drop_postgres_database,
    postgres_available,
)

APPS = ("base bare", "base core", "bare", "core")


Runs = dict[str, list[dict[str, float]]]


def _paired(
    runs: Runs, key: str, compare: Callable[[float, float], float]
) -> tuple[list[float], list[float]]:
    """Each round's core figure against the same round's bare figure: the baseline's, then this build's."""
    base = [compare(c[key], b[key]) for c, b in zip(runs["base core"], runs["base bare"], strict=True)]
    this = [compare(c[key], b[key]) for c, b in zip(runs["core"], runs["bare"], strict=True)]
    return base, this


def _median(runs: Runs, name: str, key: str) -> float:
    return statistics.median(f[key] for f in runs[name])


def _spread(values: list[float], form: str) -> str:
    """The median, and the rounds' range."""
    low, mid, high = (form.format(v) for v in (min(values), statistics.median(values), max(values)))
    return f"{mid} ({low}..{high})"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("baseline", type=Path, help="the baseline build's llmproxy-gateway executable")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--concurrency", type=int, default=16, help="connections of the throughput runs")
    parser.add_argument("--baseline-args", default="", help="the baseline's serve arguments (its core)")
    parser.add_argument(
        "--args",
        default="--without audit,flags,metering,telemetry",
        help="this build's serve arguments (its core)",
    )
    args = parser.parse_args()
    if postgres_available() is not None:
        print(f"needs PostgreSQL: {postgres_available()}", file=sys.stderr)
        return 2
    current = bg.GATEWAY  # this build's, beside this interpreter
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="compare-gateway-")))
        redis = RedisServer().start()
        stack.callback(redis.stop)
        databases = [create_postgres_database(), create_postgres_database()]
        for database in databases:
            stack.callback(drop_postgres_database, database)
        admin = secrets.token_urlsafe(16)
        base_env = bg.server_env(redis.url, databases[0], admin)
        this_env = bg.server_env(redis.url, databases[1], admin)
        servers = {
            "base core": bg.start_server(
                base_env, workdir, *shlex.split(args.baseline_args), gateway=args.baseline
            ),
            "base bare": bg.start_server(base_env, workdir, "--bare", "--no-migrate", gateway=args.baseline),
            "core": bg.start_server(this_env, workdir, *shlex.split(args.args)),
            "bare": bg.start_server(this_env, workdir, "--bare", "--no-migrate"),
        }
        for server in servers.values():
            stack.callback(server.stop)
        base_key = bg.unlimited_key(servers["base core"].url, admin)
        this_key = bg.unlimited_key(servers["core"].url, admin)
        keys = {"base core": base_key, "base bare": base_key, "core": this_key, "bare": this_key}

        scenarios = [(stream, c) for stream in (False, True) for c in (1, args.concurrency)]
        figures: dict[tuple[bool, int, str], list[dict[str, float]]] = {}
        print(
            f"baseline {args.baseline}; this build {current}; {args.rounds} rounds of {args.duration:.0f} s\n"
        )
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            for round_ in range(args.rounds):
                for stream, concurrency in scenarios:
                    for name in APPS:
                        job = pool.submit(
                            bg.run_loader,
                            servers[name].url,
                            keys[name],
                            stream,
                            args.duration,
                            concurrency,
                            "raw",
                        )
                        f = bg.summarize(job.result())
                        figures.setdefault((stream, concurrency, name), []).append(f)
                        kind = "stream" if stream else "plain"
                        print(
                            f"round {round_} {kind:6} c={concurrency:<3} {name:9} p50 {f['p50']:7.3f} ms "
                            f"p99 {f['p99']:7.3f} ms {f['rps']:6.0f} req/s errors {int(f['errors'])}",
                            flush=True,
                        )

        print("\nmedians over the rounds (each figure against the same round's bare app of its build)")
        for stream, concurrency in scenarios:
            kind = "stream" if stream else "plain"
            runs = {name: figures[(stream, concurrency, name)] for name in APPS}
            if concurrency == 1:
                base, this = _paired(runs, "p50", lambda a, b: a - b)
                added = (
                    f"{_spread(base, '{:+.2f}')} ms (baseline) vs {_spread(this, '{:+.2f}')} ms (this build)"
                )
                core = f"{_median(runs, 'base core', 'p50'):.2f} vs {_median(runs, 'core', 'p50'):.2f} ms"
                bare = f"{_median(runs, 'base bare', 'p50'):.2f} vs {_median(runs, 'bare', 'p50'):.2f} ms"
                print(f"{kind} c=1: p50 added {added}; p50 core {core}, bare {bare}")
            else:
                base, this = _paired(runs, "rps", lambda a, b: a / b)
                ratio = f"{_spread(base, '{:.0%}')} (baseline) vs {_spread(this, '{:.0%}')} (this build)"
                core = f"{_median(runs, 'base core', 'rps'):.0f} vs {_median(runs, 'core', 'rps'):.0f} req/s"
                print(f"{kind} c={concurrency}: core/bare throughput {ratio}; core {core}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
