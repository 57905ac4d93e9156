"""Instructions per request of the gateway's apps, counted by valgrind's callgrind: a figure that does not
move with the machine's load, for telling whether a change made a concern cheaper.

bench_gateway.py times the apps; on a small shared machine its figures move by ±20% between runs, more than
most single changes. This serves one app at a time under ``valgrind --tool=callgrind`` with instrumentation
off, sends warm-up requests, switches instrumentation on (``callgrind_control -i on``), sends ``--requests``
chat completions one after the other (httpx, kept-alive), waits for the span export and write-behind flushes
those requests caused, switches it off and reads the total: every thread of the server process, its
exporters and flushers included. Apps: ``bare`` (no llmproxy middleware), ``core`` (auth + quota), ``full``,
and ``full`` without each optional middleware in turn (what each concern costs per request).

Caveats: requests go one at a time, so batching under concurrency (write-behind pipelines, span batches) is
not what it would be at 16 connections; a full garbage collection happens about once per second of load
and seldom falls inside a few hundred requests (``LLMPROXY_GC_FREEZE`` shows in bench_gateway's p99, not
here); OpenSSL and other code that picks its instructions by CPU features runs its generic variant under
valgrind. A ratio of two apps' counts approximates their CPU-bound throughput ratio.

    .venv/bin/python bench/callgrind_gateway.py [--requests 300] [--apps bare,core,full,-telemetry,...]

Needs valgrind (Debian package ``valgrind``), real Redis and PostgreSQL (a throwaway redis-server and a fresh
database, as bench_gateway uses).
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from llmproxy.core.testing import RedisServer, create_postgres_database, drop_postgres_database, free_port
from llmproxy.observability.testing import OTLPReceiver

sys.path.insert(0, str(Path(__file__).parent))
from bench_gateway import BODY, GATEWAY, STREAM_BODY, server_env, unlimited_key

APPS = {
    "bare": ["--bare"],
    "core": ["--without", "audit,flags,metering,telemetry"],
    "full": [],
    "-telemetry": ["--without", "telemetry"],
    "-audit": ["--without", "audit"],
    "-metering": ["--without", "metering"],
    "-flags": ["--without", "flags"],
}


def count(name: str, env: dict[str, str], workdir: Path, requests: int, stream: bool, keys: list[str]) -> int:
    """Instructions per request of app ``name`` (the database migrated already; ``keys`` holds the API key
    the first app made, shared by the others)."""
    port = free_port()
    out = workdir / f"callgrind.{name.strip('-')}"
    log_path = workdir / f"{name.strip('-')}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         str(GATEWAY), "serve", "--no-migrate", *APPS[name]],
        env={**env, "LLMPROXY_PORT": str(port), "PYTHONHASHSEED": "0"}, stdout=log, stderr=log, cwd=workdir,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if process.poll() is not None:
                raise SystemExit(f"{name}: the server exited: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
            if time.monotonic() > deadline:
                raise SystemExit(f"{name}: the server did not start under valgrind in 10 minutes")
        if name != "bare" and not keys:
            keys.append(unlimited_key(url, env["LLMPROXY_ADMIN_TOKEN"]))
        key = keys[0] if keys else "none"
        body = STREAM_BODY if stream else BODY
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=120) as client:
            for _ in range(30):
                client.post("/v1/chat/completions", json=body).raise_for_status()
            time.sleep(6)  # the warm-up's span export and flushes happen before the count starts
            control = ["callgrind_control"]
            subprocess.run([*control, "-i", "on", str(process.pid)], check=True, capture_output=True)
            for _ in range(requests):
                client.post("/v1/chat/completions", json=body).raise_for_status()
            time.sleep(6)  # their span export (every 5 s) and write-behind flushes
            subprocess.run([*control, "-i", "off", str(process.pid)], check=True, capture_output=True)
            subprocess.run([*control, "-d", str(process.pid)], check=True, capture_output=True)
    finally:
        process.terminate()
        process.wait(120)
    total = 0
    for dump in workdir.glob(f"{out.name}*"):
        for line in dump.read_text().splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
    return total // requests


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="requests counted per app")
    parser.add_argument("--apps", default=",".join(APPS), help=f"comma-separated, of {', '.join(APPS)}")
    parser.add_argument("--stream", action="store_true", help="streaming chat completions")
    args = parser.parse_args()
    apps = [a for a in args.apps.split(",") if a]
    unknown = [a for a in apps if a not in APPS]
    if unknown:
        parser.error(f"unknown apps: {', '.join(unknown)}")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    redis = RedisServer().start()
    database = create_postgres_database()
    try:
        with tempfile.TemporaryDirectory(prefix="callgrind-gateway-") as tmp, OTLPReceiver() as receiver:
            workdir = Path(tmp)
            env = server_env(redis.url, database, secrets.token_urlsafe(16))
            env["LLMPROXY_OTLP_ENDPOINT"] = receiver.endpoint
            subprocess.run([str(GATEWAY), "migrate"], env=env, check=True, capture_output=True)
            figures: dict[str, int] = {}
            keys: list[str] = []
            for name in apps:
                figures[name] = count(name, env, workdir, args.requests, args.stream, keys)
                print(f"{name:12} {figures[name]:12,} instructions per request", flush=True)
            if "full" in figures:
                for name, value in figures.items():
                    if name.startswith("-"):
                        print(f"  {name[1:]:10} costs {figures['full'] - value:+10,} per request")
            if "bare" in figures and "full" in figures:
                print(f"bare / full = {figures['bare'] / figures['full']:.0%} (issue 16's target: >= 50%)")
            if "bare" in figures and "core" in figures:
                print(f"bare / core = {figures['bare'] / figures['core']:.0%}")
    finally:
        drop_postgres_database(database)
        redis.stop()


if __name__ == "__main__":
    main()
