"""The gateway with its llmproxy middlewares against the same app without them.

Three apps: ``full`` (observability → auth → flags → quota → audit → metering → app), ``core`` (auth →
quota → app: ``serve --without audit,flags,metering,telemetry``, the gateway as it was before those joined)
and ``bare`` (no llmproxy middleware). Each is served by uvicorn in its own process, with the mock
provider at zero delay, on real Redis + PostgreSQL when available (else the embedded backends). The load comes
from another process: a closed-loop asyncio loader speaking raw HTTP/1.1 on kept-alive connections
(cheap enough that the loader is not what limits either server; ``--loader httpx`` uses the async httpx
client instead, several times costlier per request: on 2 cores it caps both servers and flattens the
difference). Same run, same loader, non-streaming and streaming chat completions; prints requests/s and
p50/p99 latency side by side.

    .venv/bin/python bench/bench_gateway.py [--quick] [--duration S] [--concurrency N] [--loader raw|httpx]

The full app exports traces, metrics and logs over OTLP/HTTP to a local receiver (in this process), as a
deployment exporting to a collector on the same host would. With real Redis, each run also counts the Redis
server's read events (``INFO stats``), i.e. client round trips, per request.

Targets (issues 5 and 16): the middlewares add <= 1 ms at p50 and keep >= 50% of the bare app's throughput,
plain and streaming; the full stack makes <= 2 Redis round trips per request. The
added latency is read at one connection (one request at a time: what a request pays, with no queueing), the
throughput at ``--concurrency`` connections (both servers saturated: their capacity). The other figure of
each run is printed too: at one connection throughput is just 1 / latency, and on a saturated server the p50
is mostly queueing (connections / req/s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from llmproxy.core.testing import (
    RedisServer,
    create_postgres_database,
    drop_postgres_database,
    free_port,
    postgres_available,
)
from llmproxy.observability.testing import OTLPReceiver

GATEWAY = Path(sys.executable).with_name("llmproxy-gateway")
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Benchmark me, please."}]}
STREAM_BODY = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
BIG = 10**12
UNLIMITED = {
    "global_limit": {
        "requests_per_minute": BIG,
        "requests_per_day": BIG,
        "tokens_per_minute": BIG,
        "tokens_per_day": BIG,
    },
    "api_key_limit": {"requests_per_minute": BIG, "tokens_per_minute": BIG},
    "endpoint_limits": {
        "/v1/chat/completions": {"requests_per_minute": BIG, "tokens_per_minute": BIG, "burst_capacity": BIG}
    },
}


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def server_env(redis_url: str, database_url: str, admin_token: str) -> dict[str, str]:
    """This process's environment without its ``LLMPROXY_*`` settings, plus a benchmarked server's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMPROXY_")}
    env.update(
        {
            "LLMPROXY_REDIS_URL": redis_url,
            "LLMPROXY_DATABASE_URL": database_url,
            "LLMPROXY_ADMIN_TOKEN": admin_token,
            "LLMPROXY_DEMO": "false",
            "LLMPROXY_ACCESS_LOG": "false",
            "LLMPROXY_LOG_LEVEL": "WARNING",
        }
    )
    return env


def start_server(env: dict[str, str], workdir: Path, *args: str, gateway: Path = GATEWAY) -> Server:
    """``gateway serve *args`` on a free port; returns once ``/healthz`` answers."""
    port = free_port()
    proc_env = {**env, "LLMPROXY_PORT": str(port)}
    log = (workdir / f"server-{port}.log").open("wb")
    process = subprocess.Popen(
        [str(gateway), "serve", *args], env=proc_env, cwd=workdir, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {(workdir / f'server-{port}.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return Server(url, process)
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def unlimited_key(url: str, admin_token: str) -> str:
    """A new tenant with limits no benchmark reaches, and an API key of it: the key's secret."""
    headers = {"authorization": f"Bearer {admin_token}"}
    tenant = httpx.post(f"{url}/admin/tenants", json={"name": "bench"}, headers=headers).json()["id"]
    httpx.put(f"{url}/admin/tenants/{tenant}/rate-limits", json=UNLIMITED, headers=headers).raise_for_status()
    created = httpx.post(f"{url}/admin/tenants/{tenant}/api-keys", json={"name": "bench"}, headers=headers)
    return str(created.json()["key"])


# -- the loader (runs in its own process) ------------------------------------------------------------------


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    """One HTTP/1.1 request on a kept-alive connection; reads the whole response body; returns the status."""
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked = None, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)  # the chunk and its CRLF (the last one: just the CRLF)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _load(
    url: str, key: str, stream: bool, duration: float, concurrency: int, loader: str
) -> dict[str, Any]:
    """Closed-loop load: ``concurrency`` connections, each sending its next request when the last one ended.

    ``raw`` speaks HTTP/1.1 over asyncio streams (a few tens of microseconds of loader CPU per request, so
    the loader is not what limits the server's figures); ``httpx`` is the async httpx client (slower: with
    many connections on a 2-core machine it becomes the bottleneck and flattens the difference).
    """
    headers = {"authorization": f"Bearer {key}"}
    body = STREAM_BODY if stream else BODY
    latencies: list[float] = []
    errors = 0
    payload = json.dumps(body).encode()
    host, port = url.removeprefix("http://").split(":")
    raw = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}:{port}\r\nauthorization: Bearer {key}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:

        async def one_httpx() -> int:
            if stream:
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    async for _ in response.aiter_raw():
                        pass
                return response.status_code
            return (await client.post("/v1/chat/completions", json=body)).status_code

        async def worker(until: float) -> None:
            nonlocal errors
            connection = await asyncio.open_connection(host, int(port)) if loader == "raw" else None
            try:
                while time.perf_counter() < until:
                    started = time.perf_counter()
                    status = await (_request(*connection, raw) if connection else one_httpx())
                    if status == 200:
                        latencies.append(time.perf_counter() - started)
                    else:
                        errors += 1
            finally:
                if connection:
                    connection[1].close()

        warm_until = time.perf_counter() + max(1.0, duration / 3)
        await asyncio.gather(*(worker(warm_until) for _ in range(concurrency)))
        warm_requests = len(latencies) + errors
        latencies.clear()
        errors = 0
        started = time.perf_counter()
        await asyncio.gather(*(worker(started + duration) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    total = warm_requests + len(latencies) + errors
    return {"latencies": latencies, "errors": errors, "elapsed": elapsed, "requests": total}


def run_loader(
    url: str, key: str, stream: bool, duration: float, concurrency: int, loader: str
) -> dict[str, Any]:
    return asyncio.run(_load(url, key, stream, duration, concurrency, loader))


def summarize(result: dict[str, Any]) -> dict[str, float]:
    lat = sorted(result["latencies"])
    trips = result.get("redis_reads", float("nan")) / max(1, result["requests"])
    if not lat:
        return {
            "rps": 0.0,
            "p50": float("nan"),
            "p99": float("nan"),
            "errors": result["errors"],
            "trips": trips,
        }
    return {
        "rps": len(lat) / result["elapsed"],
        "p50": statistics.median(lat) * 1000,
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        "errors": result["errors"],
        "trips": trips,
    }


def redis_reads(url: str | None) -> int | None:
    """The Redis server's read events so far (``INFO stats`` ``total_reads_processed``): one per batch of
    commands a client sent in one go, so the difference over a run is the run's round trips (every process
    on that server counted: the three apps' background polls too)."""
    if url is None:
        return None
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.info("stats")["total_reads_processed"])
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 s per scenario")
    parser.add_argument("--duration", type=float, default=7.0, help="seconds per run")
    parser.add_argument("--concurrency", type=int, default=16, help="connections of the throughput runs")
    parser.add_argument(
        "--loader", choices=("raw", "httpx"), default="raw", help="HTTP client of the load process"
    )
    parser.add_argument(
        "--ablate",
        action="store_true",
        help="also serve the full app without each optional middleware in turn (plain requests)",
    )
    args = parser.parse_args()
    duration = 3.0 if args.quick else args.duration

    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-gateway-")))
        counted: str | None = None  # the Redis whose reads are counted (real Redis only)
        if postgres_available() is None:
            redis = RedisServer().start()
            stack.callback(redis.stop)
            database_url = create_postgres_database()
            stack.callback(drop_postgres_database, database_url)
            backends, redis_url = "real Redis + PostgreSQL", redis.url
            counted = redis.url
        else:
            database_url = f"sqlite:///{workdir / 'bench.db'}"
            backends, redis_url = "embedded (memory:// + SQLite)", "memory://bench"
        # The full stack exports traces, metrics and logs over OTLP/HTTP to a local receiver (this process).
        receiver = stack.enter_context(OTLPReceiver())
        admin = secrets.token_urlsafe(16)
        env = server_env(redis_url, database_url, admin)
        full = start_server({**env, "LLMPROXY_OTLP_ENDPOINT": receiver.endpoint}, workdir)
        stack.callback(full.stop)
        bare = start_server(env, workdir, "--bare", "--no-migrate")
        stack.callback(bare.stop)
        # auth + quota alone (the gateway before flags, metering, audit and observability joined it)
        core = start_server(env, workdir, "--no-migrate", "--without", "audit,flags,metering,telemetry")
        stack.callback(core.stop)

        secret = unlimited_key(full.url, admin)

        print(f"gateway benchmark: {backends}, mock provider (no delay), uvicorn 1 worker each,")
        print(f"{args.loader} asyncio loader in another process; 1 connection (latency) and")
        print(f"{args.concurrency} connections (throughput), {duration:.0f} s per run\n")
        rows = []
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            for stream in (False, True):
                for concurrency in (1, args.concurrency):
                    figures = {}
                    for name, server in (("bare", bare), ("core", core), ("full", full)):
                        before = redis_reads(counted)
                        job = pool.submit(
                            run_loader, server.url, secret, stream, duration, concurrency, args.loader
                        )
                        result = job.result()
                        after = redis_reads(counted)
                        if before is not None and after is not None:
                            result["redis_reads"] = after - before
                        figures[name] = summarize(result)
                    rows.append((f"{'stream' if stream else 'plain'} c={concurrency}", figures))

        head = (
            f"{'scenario':15} {'app':5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
            f"{'redis trips/req':>15}"
        )
        print(head)
        print("-" * len(head))
        for scenario, figures in rows:
            for name in ("bare", "core", "full"):
                f = figures[name]
                errors = int(f["errors"])
                print(
                    f"{scenario:15} {name:5} {f['rps']:9.0f} {f['p50']:8.2f} {f['p99']:8.2f} {errors:6d} "
                    f"{f['trips']:15.2f}"
                )
            b, c, f = figures["bare"], figures["core"], figures["full"]
            ratio = f["rps"] / b["rps"] if b["rps"] else float("nan")
            added = f["p50"] - b["p50"]
            core_ratio = c["rps"] / b["rps"] if b["rps"] else float("nan")
            print(
                f"{'':15} core (auth + quota only): p50 added {c['p50'] - b['p50']:+.2f} ms, "
                f"core/bare throughput {core_ratio:.0%}"
            )
            if scenario.endswith("c=1"):  # the latency run: one request at a time, no queueing
                print(
                    f"{'':15} p50 added {added:+.2f} ms (target <= 1 ms: "
                    f"{'met' if added <= 1 else 'MISSED'}); "
                    f"full/bare throughput {ratio:.0%} (one connection: 1 / latency)"
                )
            else:  # the throughput run: both servers saturated
                print(
                    f"{'':15} full/bare throughput {ratio:.0%} (target >= 50%: "
                    f"{'met' if ratio >= 0.5 else 'MISSED'}); p50 added {added:+.2f} ms "
                    f"(queueing: {args.concurrency} connections / req/s)"
                )
        if args.ablate:
            ablation(args, env, receiver.endpoint, workdir, stack, secret, duration, rows)
        time.sleep(6.0)  # the last batch of spans (exported every 5 s)
        print(
            f"\nOTLP receiver: {len(receiver.spans())} spans, {len(receiver.metrics())} metric exports, "
            f"{len(receiver.logs())} log records from the full app"
        )
        print("redis trips/req: the Redis server's read events over the run (warm-up included) per request;")
        print("target for full (issue 16): <= 2 (the admit, then one write-behind pipeline)")
        print("\n" + json.dumps(dict(rows), default=float))


def ablation(
    args: argparse.Namespace,
    env: dict[str, str],
    otlp_endpoint: str,
    workdir: Path,
    stack: ExitStack,
    secret: str,
    duration: float,
    rows: list[tuple[str, dict[str, dict[str, float]]]],
) -> None:
    """The full app less one middleware at a time, against the full app of the same run (plain requests)."""
    full_env = {**env, "LLMPROXY_OTLP_ENDPOINT": otlp_endpoint}
    servers = {}
    for name in ("telemetry", "audit", "metering", "flags"):
        servers[name] = start_server(full_env, workdir, "--no-migrate", "--without", name)
        stack.callback(servers[name].stop)
    full = {scenario: figures["full"] for scenario, figures in rows if scenario.startswith("plain")}
    print(f"\n{'without':10} {'c=1 p50 ms':>11} {'saves ms':>9} {'c=16 req/s':>11} {'gains req/s':>12}")
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        for name, server in servers.items():
            figures = {}
            for concurrency in (1, args.concurrency):
                job = pool.submit(run_loader, server.url, secret, False, duration, concurrency, args.loader)
                figures[concurrency] = summarize(job.result())
            one, many = figures[1], figures[args.concurrency]
            saves = full["plain c=1"]["p50"] - one["p50"]
            gains = many["rps"] - full[f"plain c={args.concurrency}"]["rps"]
            print(f"{name:10} {one['p50']:11.2f} {saves:+9.2f} {many['rps']:11.0f} {gains:+12.0f}")


if __name__ == "__main__":
    main()
