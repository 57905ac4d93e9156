"""The gateway's edge: each request's context and usage end with it, and a 500 closes its connection."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Collection, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio.connection import Connection as AsyncConnection

from llmproxy.core import ASGIApp, Receive, Scope, Send, current_context, current_usage
from llmproxy.core.testing import Backend, free_port, lifespan
from llmproxy_gateway import GatewaySettings, MockProvider, create_app
from llmproxy_gateway._app import with_edge
from llmproxy_gateway._edge import ErrorGuard
from llmproxy_gateway._providers import JSONObject
from llmproxy_gateway._schemas import ChatCompletionRequest

HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
ADMIN = {"authorization": "Bearer edge-admin-token"}


@asynccontextmanager
async def serving(backend: Backend, *, without: Collection[str] = ()) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway called in this test's own task (no server in between), its lifespan run around the test
    (what the app starts, flags' loop and metering's flusher, stops with it)."""
    settings = GatewaySettings(
        redis_url=backend.redis_url,
        database_url=backend.database_url,
        admin_token="edge-admin-token",
        access_log=False,
    )
    app = create_app(settings, without=without)
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
    ):
        yield client


async def new_tenant(client: httpx.AsyncClient, name: str) -> str:
    response = await client.post("/admin/tenants", json={"name": name}, headers=ADMIN)
    tenant: str = response.json()["id"]
    return tenant


async def new_key(client: httpx.AsyncClient, tenant: str) -> str:
    issued = await client.post(f"/admin/tenants/{tenant}/api-keys", json={"name": "k"}, headers=ADMIN)
    key: str = issued.json()["key"]
    return key


@pytest.fixture
async def in_process(backend: Backend) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The full gateway called in-process, and an API key."""
    async with serving(backend) as client:
        yield client, await new_key(client, await new_tenant(client, "edge"))


async def test_a_public_request_leaves_no_context_behind(in_process: tuple[httpx.AsyncClient, str]) -> None:
    client, _ = in_process
    assert (await client.get("/healthz")).status_code == 200
    assert current_context() is None


async def test_an_api_request_leaves_no_context_or_usage_behind(
    in_process: tuple[httpx.AsyncClient, str],
) -> None:
    client, key = in_process
    response = await client.post(
        "/v1/chat/completions", json=HELLO, headers={"authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200
    assert current_context() is None
    assert current_usage() is None


class ExplodingProvider(MockProvider):
    async def chat(self, request: ChatCompletionRequest, model: str) -> JSONObject:
        raise RuntimeError("a bug in the provider")


def _settings(tmp_path: Path) -> GatewaySettings:
    return GatewaySettings(database_url=f"sqlite:///{tmp_path / 'x.db'}", access_log=False)


async def test_a_bug_in_a_handler_is_answered_and_not_passed_on_to_the_server(tmp_path: Path) -> None:
    from llmproxy_gateway import create_api

    settings = _settings(tmp_path)
    app = with_edge(create_api(settings, provider=ExplodingProvider()), settings)
    # raise_app_exceptions (the default) fails the request if the exception reaches the server
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        response = await http.post("/v1/chat/completions", json=HELLO)
    assert response.status_code == 500
    assert response.headers["connection"] == "close"
    assert response.json()["error"]["code"] == "internal_error"


async def test_a_bug_in_a_middleware_is_a_500_that_closes_the_connection() -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("a bug in a middleware")

    app: ASGIApp = ErrorGuard(broken)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        response = await http.get("/anything")
    assert response.status_code == 500
    assert response.headers["connection"] == "close"
    assert response.json()["error"] == {
        "message": "internal server error",
        "type": "server_error",
        "code": "internal_error",
        "param": None,
    }


EXPLODING_SERVER = """
import sys

import uvicorn

from llmproxy_gateway import GatewaySettings, MockProvider, create_api
from llmproxy_gateway._app import with_edge


class ExplodingProvider(MockProvider):
    async def chat(self, request, model):
        raise RuntimeError("a bug in the provider")


settings = GatewaySettings(database_url=sys.argv[2], redis_url="memory://", access_log=False)
app = with_edge(create_api(settings, provider=ExplodingProvider()), settings)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=None)
"""


@pytest.fixture
def exploding_server(tmp_path: Path) -> Iterator[int]:
    """A real uvicorn process serving the gateway's app whose provider always raises; its port."""
    script = tmp_path / "exploding.py"
    script.write_text(EXPLODING_SERVER)
    port = free_port()
    log = (tmp_path / "exploding.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(script), str(port), f"sqlite:///{tmp_path / 'x.db'}"], stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        else:
            raise RuntimeError((tmp_path / "exploding.log").read_text())
        yield port
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def _read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """The head of one HTTP response, and what followed until the server closed the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before the response head: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    while chunk := sock.recv(65536):
        rest += chunk
    return head, rest


def test_a_500_from_a_real_server_says_connection_close_and_closes_it(exploding_server: int) -> None:
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nconnection: keep-alive\r\n"
        b"content-type: application/json\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    with socket.create_connection(("127.0.0.1", exploding_server), timeout=10) as sock:
        sock.sendall(request)
        head, rest = _read_response(sock)  # returns once the server has closed the connection
    lines = head.decode("latin-1").lower().split("\r\n")
    assert lines[0].startswith("http/1.1 500")
    assert "connection: close" in lines
    assert b'"internal_error"' in rest
    # A client that pools connections is told, and its next request (on a new connection) is served.
    with httpx.Client(base_url=f"http://127.0.0.1:{exploding_server}", timeout=10) as client:
        failed = client.post(
            "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
        )
        assert failed.status_code == 500
        assert failed.headers["connection"] == "close"
        assert client.get("/healthz").status_code == 200


async def test_a_database_error_escaping_a_middleware_is_503_database_unavailable() -> None:
    import sqlalchemy as sa

    async def needs_the_database(scope: Scope, receive: Receive, send: Send) -> None:
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    app: ASGIApp = ErrorGuard(needs_the_database)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        response = await http.get("/anything")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "database_unavailable"


async def test_metering_audit_and_flags_add_no_redis_round_trip_to_a_request(
    real_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests one at a time on real Redis: quota's two round trips at most (the admit; the settle, which the
    next request's admit takes along when it comes within the write-behind's 5 ms), and nothing more: the
    usage record and the audit event leave in the settle's pipeline; flags evaluate in-process. (On a quiet
    machine, requests a millisecond or two apart, it is one write per request; under load, two.)"""
    writes = 0
    async with serving(real_backend) as client:  # (real: the writes are counted on real connections)
        tenant = await new_tenant(client, "trips")
        big = {"requests_per_minute": 10**9, "tokens_per_minute": 10**12}
        limits = {
            "global_limit": {**big, "requests_per_day": 10**9, "tokens_per_day": 10**12},
            "api_key_limit": big,
        }
        put = await client.put(f"/admin/tenants/{tenant}/rate-limits", json=limits, headers=ADMIN)
        assert put.status_code == 200, put.text
        headers = {"authorization": f"Bearer {await new_key(client, tenant)}"}
        for _ in range(5):  # warm: the key in auth's cache, the scripts loaded, the held connection taken
            assert (await client.post("/v1/chat/completions", json=HELLO, headers=headers)).status_code == 200
        original = AsyncConnection.send_packed_command

        async def counted(conn: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal writes
            writes += 1
            return await original(conn, command, *args, **kwargs)

        monkeypatch.setattr(AsyncConnection, "send_packed_command", counted)  # every connection of the app
        n = 100
        for _ in range(n):
            assert (await client.post("/v1/chat/completions", json=HELLO, headers=headers)).status_code == 200
        monkeypatch.undo()
    print(f"{writes} writes to Redis for {n} requests")
    # n admits and at most n settle pipelines (with the record and the event), and room for a background poll
    # or two; a round trip of metering's or audit's own would make it 3n
    assert writes <= 2 * n + 4, writes


async def test_the_gateway_without_its_optional_middlewares_still_authenticates_and_limits(
    backend: Backend,
) -> None:
    async with serving(backend, without={"audit", "flags", "metering", "telemetry"}) as client:
        assert (await client.post("/v1/chat/completions", json=HELLO)).status_code == 401
        tenant = await new_tenant(client, "lean")
        headers = {"authorization": f"Bearer {await new_key(client, tenant)}"}
        response = await client.post("/v1/chat/completions", json=HELLO, headers=headers)
        assert response.status_code == 200
        assert "x-ratelimit-limit-requests" in response.headers  # quota is still there
        now = int(time.time())
        hour = now - now % 3600
        window = {"start": str(hour - 3600), "end": str(hour + 3600), "granularity": "hour"}
        usage = await client.get(f"/admin/tenants/{tenant}/usage", params=window, headers=ADMIN)
        assert usage.status_code == 200, usage.text
        counted = [r["num_model_requests"] for b in usage.json()["data"] for r in b["results"]]
        assert sum(counted) == 0  # metering was left out: nothing recorded
