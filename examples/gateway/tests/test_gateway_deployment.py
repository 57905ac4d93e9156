"""The deployment, end to end: the Procfile's processes on real Redis + PostgreSQL, driven by openai's client.

Each line of ``examples/gateway/Procfile`` (parsed by honcho, which runs it in ``nox -s deploy``) runs as a
real process: the gateway (three uvicorn worker processes behind one port), the admin API, the audit consumer
and the metering flusher. The gateway's provider is an OpenAI-compatible upstream served by this test, which
records the ``traceparent`` each call carries; every process exports spans to a local OTLP receiver.

While the openai client drives traffic, a tenant's limit, a flag and an API key are changed through the admin
API, and the audit consumer and the metering flusher are each killed with SIGKILL once and restarted.
Afterwards: the limit held across processes, usage in PostgreSQL equals what the clients saw, every admin
change and every completed request is in the audit table exactly once and the chains verify, the flag and key
changes reached every gateway process within a second, and each request is one trace down to the upstream.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa
from honcho.environ import parse_procfile

from llmproxy.core import create_engine
from llmproxy.core.testing import free_port
from llmproxy.observability.testing import OTLPReceiver

pytestmark = [pytest.mark.real, pytest.mark.slow]

PROCFILE = Path(__file__).parents[1] / "Procfile"
BIN = Path(sys.executable).parent
GATEWAY_WORKERS = 3
PROPAGATION_DEADLINE = 1.0
SERVER_KIND = 2  # SpanKind.SERVER in OTLP
B_REQUESTS_PER_MINUTE = 5


class Upstream:
    """An OpenAI-compatible chat completions endpoint that records the trace id of every call."""

    def __init__(self) -> None:
        self.trace_ids: list[str] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                traceparent = self.headers.get("traceparent") or ""
                upstream.trace_ids.append(traceparent.split("-")[1] if traceparent.count("-") == 3 else "")
                words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
                reply = {
                    "id": f"chatcmpl-{uuid.uuid4().hex}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "four words of reply"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": words + 3, "completion_tokens": 4, "total_tokens": words + 7},
                }
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> Upstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Deployment:
    """The Procfile's processes, each started by its own shell in a process group of its own."""

    env: dict[str, str]
    workdir: Path
    commands: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    starts: Counter[str] = field(default_factory=Counter)

    def start(self, name: str) -> None:
        self.starts[name] += 1
        log = (self.workdir / f"{name}.{self.starts[name]}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            ["/bin/sh", "-c", self.commands[name]],
            env=self.env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: the signal reaches the shell and what it started
        )
        log.close()

    def wait_running(self, name: str, timeout: float = 60.0) -> None:
        """Until the worker's latest start logs that it runs (its signal handlers are installed)."""
        log = self.workdir / f"{name}.{self.starts[name]}.log"
        wait_until(
            lambda: "workers running" in log.read_text(errors="replace"), timeout, f"{name} runs", self
        )

    def signal(self, name: str, sig: signal.Signals) -> None:
        process = self.processes[name]
        if process.poll() is None:
            os.killpg(process.pid, sig)

    def stop(self, name: str, timeout: float = 30.0) -> int | None:
        self.signal(name, signal.SIGTERM)
        try:
            return self.processes[name].wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(name, signal.SIGKILL)
            self.processes[name].wait()
            return None

    def kill(self, name: str) -> None:
        """SIGKILL: no handler runs, nothing is flushed or acknowledged."""
        self.signal(name, signal.SIGKILL)
        self.processes[name].wait()

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.workdir.glob("*.log"))
        )


def wait_until(condition: Callable[[], bool], timeout: float, what: str, deployment: Deployment) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout} s\n{deployment.logs()}")


@pytest.fixture
def deployment(
    real_services: tuple[str, str], tmp_path: Path
) -> Iterator[tuple[Deployment, OTLPReceiver, Upstream]]:
    redis_url, database_url = real_services
    with OTLPReceiver() as receiver, Upstream() as upstream:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMPROXY_", "OTEL_"))}
        env.update(
            {
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
                "LLMPROXY_REDIS_URL": redis_url,
                "LLMPROXY_DATABASE_URL": database_url,
                "LLMPROXY_PORT": str(free_port()),
                "LLMPROXY_ADMIN_PORT": str(free_port()),
                "LLMPROXY_ADMIN_TOKEN": secrets.token_urlsafe(24),
                "LLMPROXY_DEMO": "false",
                "LLMPROXY_GATEWAY_WORKERS": str(GATEWAY_WORKERS),
                "LLMPROXY_PROVIDER": "openai",
                "LLMPROXY_UPSTREAM_BASE_URL": upstream.base_url,
                "LLMPROXY_UPSTREAM_API_KEY": "sk-upstream",
                "LLMPROXY_OTLP_ENDPOINT": receiver.endpoint,
                "LLMPROXY_METERING_FLUSH_INTERVAL": "1",
                "OTEL_BSP_SCHEDULE_DELAY": "100",
            }
        )
        migrate = subprocess.run(
            [str(BIN / "llmproxy-gateway"), "migrate"], env=env, capture_output=True, timeout=120
        )
        assert migrate.returncode == 0, migrate.stderr.decode(errors="replace")
        commands = dict(parse_procfile(PROCFILE.read_text()).processes)
        assert set(commands) == {"gateway", "admin", "audit", "metering"}
        running = Deployment(env, tmp_path, commands)
        try:
            for name in commands:
                running.start(name)
            for port in ("LLMPROXY_PORT", "LLMPROXY_ADMIN_PORT"):
                url = f"http://127.0.0.1:{env[port]}/healthz"
                wait_until(lambda url=url: httpx.get(url, timeout=1).status_code == 200, 60, url, running)
            yield running, receiver, upstream
        finally:
            for name in running.processes:
                running.stop(name, timeout=10)


class Admin:
    def __init__(self, deployment: Deployment) -> None:
        self.base = f"http://127.0.0.1:{deployment.env['LLMPROXY_ADMIN_PORT']}/admin"
        self.headers = {"authorization": f"Bearer {deployment.env['LLMPROXY_ADMIN_TOKEN']}"}

    def __call__(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        response = httpx.request(method, f"{self.base}{path}", headers=self.headers, timeout=10, **kwargs)
        assert response.status_code == expect, response.text
        return response.json() if response.content else None


def limits(requests_per_minute: int) -> dict[str, Any]:
    return {
        "global_limit": {
            "requests_per_minute": requests_per_minute,
            "requests_per_day": 10_000_000,
            "tokens_per_minute": 100_000_000,
            "tokens_per_day": 1_000_000_000,
        },
        "api_key_limit": {"requests_per_minute": requests_per_minute, "tokens_per_minute": 100_000_000},
    }


@dataclass
class Outcome:
    status: int
    trace_id: str
    request_id: str
    input_tokens: int = 0
    output_tokens: int = 0


class Clients:
    """The official openai client; a new connection per request, so requests spread over the workers."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=10)
        self.lock = threading.Lock()
        self.outcomes: list[Outcome] = []

    def chat(self, key: str, words: int = 3) -> Outcome:
        client = openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=0, http_client=self.http)
        trace_id, request_id = secrets.token_hex(16), uuid.uuid4().hex
        headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01", "x-request-id": request_id}
        content = " ".join(["hello"] * words)
        try:
            reply = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": content}],
                extra_headers=headers,
            )
        except openai.APIStatusError as exc:
            outcome = Outcome(exc.status_code, trace_id, request_id)
        else:
            assert reply.usage is not None
            outcome = Outcome(
                200, trace_id, request_id, reply.usage.prompt_tokens, reply.usage.completion_tokens
            )
        with self.lock:
            self.outcomes.append(outcome)
        return outcome

    def burst(self, key: str, count: int) -> list[Outcome]:
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda _: self.chat(key), range(count)))


def instances(receiver: OTLPReceiver, outcomes: list[Outcome]) -> set[str]:
    """The gateway processes (``service.instance.id``) whose SERVER spans answered these requests."""
    wanted = {o.trace_id for o in outcomes}
    return {
        str(span.resource["service.instance.id"])
        for span in receiver.spans()
        if span.trace_id in wanted and span.kind == SERVER_KIND
    }


def test_the_deployment_under_traffic_admin_changes_and_killed_workers(
    deployment: tuple[Deployment, OTLPReceiver, Upstream],
) -> None:
    running, receiver, upstream = deployment
    admin = Admin(running)
    clients = Clients(f"http://127.0.0.1:{running.env['LLMPROXY_PORT']}/v1")

    tenants = {name: admin("POST", "/tenants", 201, json={"name": name})["id"] for name in ("a", "b", "c")}
    keys = {
        name: admin("POST", f"/tenants/{tid}/api-keys", 201, json={"name": "k"})
        for name, tid in tenants.items()
    }
    doomed = admin("POST", f"/tenants/{tenants['a']}/api-keys", 201, json={"name": "doomed"})
    admin("PUT", f"/tenants/{tenants['a']}/rate-limits", 200, json=limits(100_000))
    # Every process serves (and caches) each key first.
    wait_until(
        lambda: len(instances(receiver, clients.burst(doomed["key"], 24))) == GATEWAY_WORKERS,
        30,
        "requests reach every gateway process",
        running,
    )
    gateway_instances = instances(receiver, clients.outcomes)
    for name in ("b", "c"):
        assert {o.status for o in clients.burst(keys[name]["key"], 4)} == {200}

    stop_traffic = threading.Event()

    def traffic() -> None:
        while not stop_traffic.is_set():
            clients.chat(keys["a"]["key"], words=secrets.randbelow(20) + 1)

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        running.kill("audit")  # SIGKILL, mid-traffic: the batch in hand is neither stored nor acknowledged
        time.sleep(1.0)
        running.start("audit")
        running.wait_running("audit")

        # A tenant's limit, lowered through the admin API: all gateway processes together admit at most it.
        admin("PUT", f"/tenants/{tenants['b']}/rate-limits", 200, json=limits(B_REQUESTS_PER_MINUTE))
        time.sleep(PROPAGATION_DEADLINE)
        limited = clients.burst(keys["b"]["key"], 30)
        statuses = Counter(o.status for o in limited)
        assert set(statuses) <= {200, 429}, statuses
        assert 1 <= statuses[200] <= B_REQUESTS_PER_MINUTE, statuses

        running.kill("metering")  # SIGKILL between flushes: recorded usage waits in Redis
        # A flag: the OpenAI-compatible API off for tenant c (on for the others).
        flag = {"enabled_for_tenants": [tenants["a"], tenants["b"]]}
        admin("PUT", "/flags/llm_gateway/simple", 200, json=flag)
        changed_at = time.monotonic()
        running.start("metering")
        # An API key revoked.
        admin("DELETE", f"/tenants/{tenants['a']}/api-keys/{doomed['id']}", 204)
        revoked_at = time.monotonic()
        time.sleep(max(0.0, changed_at + PROPAGATION_DEADLINE - time.monotonic()))
        refused = clients.burst(keys["c"]["key"], 30)
        assert {o.status for o in refused} == {403}, Counter(o.status for o in refused)
        time.sleep(max(0.0, revoked_at + PROPAGATION_DEADLINE - time.monotonic()))
        rejected = clients.burst(doomed["key"], 30)
        assert {o.status for o in rejected} == {401}, Counter(o.status for o in rejected)
        running.wait_running("metering")
        time.sleep(1.0)
    finally:
        stop_traffic.set()
        for thread in threads:
            thread.join()

    # Each change reached every gateway process: the refusals came from all of them.
    wait_until(
        lambda: (
            instances(receiver, refused) == gateway_instances
            and instances(receiver, rejected) == gateway_instances
        ),
        10,
        "the flag and key refusals' spans from every gateway process",
        running,
    )

    # The gateways stop first (their write-behind flushes the last settles, usage and audit events).
    assert running.stop("gateway") is not None
    assert running.stop("admin") is not None
    completed = [o for o in clients.outcomes if o.status == 200]
    engine = create_engine(running.env["LLMPROXY_DATABASE_URL"])
    try:

        def audited_requests() -> list[str]:
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text(
                        "SELECT request_id FROM audit.audit_events WHERE action = 'llm_request_completed'"
                    )
                )
                return [row[0] for row in rows]

        def metered() -> tuple[int, int, int]:
            with engine.connect() as conn:
                row = conn.execute(
                    sa.text(
                        "SELECT coalesce(sum(requests), 0), coalesce(sum(input_tokens), 0),"
                        " coalesce(sum(output_tokens), 0) FROM metering.usage_hourly"
                    )
                ).one()
            return int(row[0]), int(row[1]), int(row[2])

        wait_until(lambda: len(audited_requests()) >= len(completed), 30, "every request audited", running)
        wait_until(lambda: metered()[0] >= len(completed), 30, "every request metered", running)
        assert running.stop("audit") is not None
        assert running.stop("metering") is not None

        # Audit: every completed request exactly once (no loss, no double despite the SIGKILL).
        ids = Counter(audited_requests())
        assert ids == Counter(o.request_id for o in completed)
        with engine.connect() as conn:
            actions = Counter(
                row[0]
                for row in conn.execute(
                    sa.text("SELECT action FROM audit.audit_events WHERE action <> 'llm_request_completed'")
                )
            )
        assert actions == {
            "tenant.create": 3,
            "api_key.issue": 4,
            "rate_limits.update": 2,
            "flag.create": 1,
            "api_key.revoke": 1,
        }
        verify = subprocess.run(
            [str(BIN / "llmproxy-audit"), "verify", "--all"], env=running.env, capture_output=True, timeout=60
        )
        assert verify.returncode == 0, verify.stdout.decode() + verify.stderr.decode()

        # Metering: what PostgreSQL holds is what the clients were told, despite the flusher's SIGKILL.
        assert metered() == (
            len(completed),
            sum(o.input_tokens for o in completed),
            sum(o.output_tokens for o in completed),
        )
    finally:
        engine.dispose()
    assert running.starts["audit"] == running.starts["metering"] == 2

    # Tracing: each completed request is one trace, from the gateway's SERVER span down to the upstream call.
    traced = set(upstream.trace_ids)
    assert {o.trace_id for o in completed} == traced
    assert len(upstream.trace_ids) == len(traced) == len(completed)
    wait_until(
        lambda: (
            instances(receiver, completed) <= gateway_instances
            and {s.trace_id for s in receiver.spans() if s.kind == SERVER_KIND} >= traced
        ),
        10,
        "every completed request's SERVER span exported",
        running,
    )
