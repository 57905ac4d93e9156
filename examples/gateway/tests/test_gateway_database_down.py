"""PostgreSQL cut or paused under a served gateway: 503 database_unavailable with Retry-After, in bounded
time.

The gateway runs with a 2 s connect and a 1 s statement timeout (LLMPROXY_DATABASE_*_TIMEOUT). Each test
prints how long the 503s took (``pytest -s``): what a client waits is reported, never asserted.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from llmproxy.core.testing import Backend, TcpProxy

from .conftest import GatewayProcess, start_gateway

pytestmark = [pytest.mark.real, pytest.mark.slow]

HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
TIMEOUTS = {"database_connect_timeout": "2", "database_statement_timeout": "1"}


@pytest.fixture
def gateway_and_proxy(proxied_backend: Backend, tmp_path: Path) -> Iterator[tuple[GatewayProcess, TcpProxy]]:
    """A gateway reaching PostgreSQL through a proxy the test cuts or pauses; a tenant, a key it has used."""
    assert proxied_backend.database_proxy is not None
    gateway = start_gateway(
        tmp_path, redis_url=proxied_backend.redis_url, database_url=proxied_backend.database_url, **TIMEOUTS
    )
    try:
        gateway.provision("db-down")
        assert chat(gateway, gateway.api_key).status_code == 200  # the key and the limits are cached now
        yield gateway, proxied_backend.database_proxy
    finally:
        gateway.stop()


def chat(gw: GatewayProcess, key: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(f"{gw.base_url}/v1/chat/completions", json=HELLO, headers=headers, timeout=30)


def admin_calls(gw: GatewayProcess) -> dict[str, Callable[[], httpx.Response]]:
    tenant = f"/tenants/{gw.tenant_id}"
    return {
        "GET /admin/tenants": lambda: gw.admin("GET", "/tenants", timeout=30),
        "POST /admin/tenants": lambda: gw.admin("POST", "/tenants", json={"name": "new"}, timeout=30),
        "GET /admin/tenants/{id}": lambda: gw.admin("GET", tenant, timeout=30),
        "GET /admin/tenants/{id}/api-keys": lambda: gw.admin("GET", f"{tenant}/api-keys", timeout=30),
        "POST /admin/tenants/{id}/api-keys": lambda: gw.admin(
            "POST", f"{tenant}/api-keys", json={"name": "k"}, timeout=30
        ),
    }


def assert_database_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "database_unavailable"
    assert response.json()["error"]["type"] == "service_unavailable"
    assert int(response.headers["retry-after"]) >= 1


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def test_admin_routes_answer_503_while_postgres_is_cut(
    gateway_and_proxy: tuple[GatewayProcess, TcpProxy],
) -> None:
    gateway, proxy = gateway_and_proxy
    proxy.cut()
    for name, call in admin_calls(gateway).items():
        response, seconds = timed(call)
        print(f"cut:    {name}: {response.status_code} in {seconds:.3f} s")
        assert_database_unavailable(response)
    proxy.restore()
    assert gateway.admin("GET", f"/tenants/{gateway.tenant_id}").status_code == 200


def test_admin_routes_answer_503_while_postgres_is_paused(
    gateway_and_proxy: tuple[GatewayProcess, TcpProxy],
) -> None:
    gateway, proxy = gateway_and_proxy
    proxy.pause()
    for name, call in admin_calls(gateway).items():
        response, seconds = timed(call)
        print(f"paused: {name}: {response.status_code} in {seconds:.3f} s")
        assert_database_unavailable(response)
    proxy.restore()
    assert gateway.admin("GET", f"/tenants/{gateway.tenant_id}").status_code == 200


@pytest.mark.parametrize("outage", ["cut", "pause"])
def test_a_known_key_is_served_while_postgres_is_down(
    gateway_and_proxy: tuple[GatewayProcess, TcpProxy], outage: str
) -> None:
    gateway, proxy = gateway_and_proxy
    getattr(proxy, outage)()
    response, seconds = timed(lambda: chat(gateway, gateway.api_key))
    print(f"{outage}: a cached key's completion: {response.status_code} in {seconds:.3f} s")
    assert response.status_code == 200


@pytest.mark.parametrize("outage", ["cut", "pause"])
def test_a_key_first_seen_while_postgres_is_down_is_503(
    gateway_and_proxy: tuple[GatewayProcess, TcpProxy], outage: str
) -> None:
    gateway, proxy = gateway_and_proxy
    _, fresh_key = gateway.issue_key(gateway.tenant_id, "never-used")
    getattr(proxy, outage)()
    response, seconds = timed(lambda: chat(gateway, fresh_key))
    print(f"{outage}: a new key's completion: {response.status_code} in {seconds:.3f} s")
    assert response.status_code == 503
    assert response.headers["retry-after"]
    proxy.restore()
    assert chat(gateway, fresh_key).status_code == 200


def test_a_locked_sqlite_database_is_503_after_the_statement_timeout(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"
    gateway = start_gateway(
        tmp_path, redis_url="memory://locked", database_url=f"sqlite:///{database}", **TIMEOUTS
    )
    try:
        holder = sqlite3.connect(database, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        try:
            response, seconds = timed(lambda: gateway.admin("POST", "/tenants", json={"name": "x"}))
            print(f"sqlite locked: POST /admin/tenants: {response.status_code} in {seconds:.3f} s")
            assert_database_unavailable(response)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert gateway.admin("POST", "/tenants", json={"name": "x"}).status_code == 201
    finally:
        gateway.stop()
