"""``/healthz`` reports each backend; the admin API as an app of its own; ``serve --workers``, ``workers``."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmproxy.core.testing import Backend, free_port, lifespan
from llmproxy_gateway import GatewaySettings, create_admin_app, create_app

from .conftest import GATEWAY_SCRIPT

ADMIN = {"authorization": "Bearer health-admin-token"}


@asynccontextmanager
async def client_of(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
    ):
        yield client


def settings_for(backend: Backend, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "redis_url": backend.redis_url,
        "database_url": backend.database_url,
        "admin_token": "health-admin-token",
        "access_log": False,
        **overrides,
    }
    return GatewaySettings(**values)


async def test_healthz_reports_each_backend_up(backend: Backend) -> None:
    async with client_of(create_app(settings_for(backend))) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["backends"]) == {"database", "redis"}  # no broker: audit travels over Redis
    assert body["backends"]["database"]["status"] == "ok"
    assert body["backends"]["database"]["required"] is True
    assert body["backends"]["redis"]["status"] == "ok"
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("freeze", [True, False])
async def test_the_start_up_heap_is_frozen_while_serving_and_thawed_at_shutdown(
    backend: Backend, freeze: bool
) -> None:
    gc.unfreeze()
    async with client_of(create_app(settings_for(backend, gc_freeze=freeze))) as client:
        assert (await client.get("/healthz")).status_code == 200
        frozen = gc.get_freeze_count()
    assert (frozen > 10_000) is freeze  # the imports, the app and its clients (0 when off)
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize(
    ("policy", "status", "overall"), [("open", 200, "degraded"), ("closed", 503, "unavailable")]
)
async def test_redis_down_is_degraded_unless_quota_fails_closed(
    backend: Backend, policy: str, status: int, overall: str
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = settings_for(backend, redis_url=dead_redis, quota_failure_policy=policy)
    async with client_of(create_app(settings, without={"audit"})) as client:
        response = await client.get("/healthz")
    assert response.status_code == status
    body = response.json()
    assert body["status"] == overall
    assert body["backends"]["redis"]["status"] == "down"
    assert body["backends"]["redis"]["required"] is (policy == "closed")
    assert body["backends"]["redis"]["error"]
    assert body["backends"]["database"]["status"] == "ok"


async def test_an_unreachable_broker_is_reported_but_optional(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMPROXY_AUDIT_TRANSPORT_URL", f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    async with client_of(create_app(settings_for(backend))) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["backends"]["broker"] == {
        "status": "down",
        "required": False,
        "error": body["backends"]["broker"]["error"],
    }
    assert (
        "Connect" in body["backends"]["broker"]["error"] or "refused" in body["backends"]["broker"]["error"]
    )


async def test_the_admin_app_serves_admin_routes_and_no_v1(backend: Backend) -> None:
    async with client_of(create_admin_app(settings_for(backend))) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/admin/tenants")).status_code == 401
        created = await client.post("/admin/tenants", json={"name": "admin-app"}, headers=ADMIN)
        assert created.status_code == 201, created.text
        issued = await client.post(
            f"/admin/tenants/{created.json()['id']}/api-keys", json={"name": "k"}, headers=ADMIN
        )
        assert issued.status_code == 201
        key = issued.json()["key"]
        # The key is good, but this app has no OpenAI-compatible API.
        chat = await client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {key}"},
        )
        assert chat.status_code == 404
        schema = (await client.get("/openapi.json")).json()
    assert schema["info"]["title"] == "llmproxy admin API"
    assert any(path.startswith("/admin/tenants") for path in schema["paths"])
    assert not any(path.startswith("/v1") for path in schema["paths"])


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LLMPROXY_")}
    environ.update(
        {"LLMPROXY_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "LLMPROXY_REDIS_URL": "memory://cli"}
    )
    environ.update(env)
    return subprocess.run(
        [str(GATEWAY_SCRIPT), *args], cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120
    )


def test_unknown_workers_and_a_bad_worker_count_fail_with_a_message(tmp_path: Path) -> None:
    unknown = run_cli(tmp_path, "workers", "audit", "billing")
    assert unknown.returncode == 2
    assert "unknown worker(s) billing" in unknown.stderr
    assert "audit, metering" in unknown.stderr
    zero = run_cli(tmp_path, "serve", "--workers", "0", "--no-demo")
    assert zero.returncode == 2
    assert "--workers must be >= 1" in zero.stderr


@pytest.mark.slow
def test_workers_run_until_sigterm_and_exit_cleanly(backend: Backend, tmp_path: Path) -> None:
    assert run_cli(tmp_path, "migrate", LLMPROXY_DATABASE_URL=backend.database_url).returncode == 0
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LLMPROXY_")}
    environ.update(
        {
            "LLMPROXY_DATABASE_URL": backend.database_url,
            "LLMPROXY_REDIS_URL": backend.redis_url,
            "LLMPROXY_METERING_FLUSH_INTERVAL": "0.2",
            "LLMPROXY_LOG_FORMAT": "text",
            "LLMPROXY_LOG_LEVEL": "DEBUG",  # an idle flush round logs at DEBUG
        }
    )
    log = tmp_path / "workers.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(GATEWAY_SCRIPT), "workers"], cwd=tmp_path, env=environ, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while "flushed" not in log.read_text() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        assert "workers running" in log.read_text(), log.read_text()
        assert "flushed" in log.read_text(), log.read_text()  # the flusher ran a round
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert "audit consumer stopped" in text
    assert "metering flusher stopped" in text


@pytest.mark.real
@pytest.mark.slow
def test_serve_with_workers_answers_from_several_processes(real_backend: Backend, tmp_path: Path) -> None:
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LLMPROXY_")}
    environ.update(
        {
            "LLMPROXY_DATABASE_URL": real_backend.database_url,
            "LLMPROXY_REDIS_URL": real_backend.redis_url,
            "LLMPROXY_PORT": str(port),
            "LLMPROXY_DEMO": "false",
        }
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(GATEWAY_SCRIPT), "serve", "--workers", "2"],
            cwd=tmp_path,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        started: set[str] = set()
        while time.monotonic() < deadline and len(started) < 2:
            started = {
                line.split("[")[1].split("]")[0]
                for line in log.read_text().splitlines()
                if "Application startup complete" in line or "Started server process" in line
                if "[" in line
            }
            time.sleep(0.2)
        assert len(started) == 2, log.read_text()
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()["status"] == "ok"
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert log.read_text().count("Application shutdown complete") == 2
