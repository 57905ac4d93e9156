"""The gateway's edge: each request's context and usage end with it, and a 500 closes its connection."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from llmproxy.core import ASGIApp, Receive, Scope, Send, current_context, current_usage
from llmproxy.core.testing import Backend, free_port, lifespan
from llmproxy_gateway import GatewaySettings, MockProvider, create_app
from llmproxy_gateway._app import with_edge
from llmproxy_gateway._edge import ErrorGuard
from llmproxy_gateway._providers import JSONObject
from llmproxy_gateway._schemas import ChatCompletionRequest

HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
ADMIN = {"authorization": "Bearer edge-admin-token"}


@pytest.fixture
async def in_process(backend: Backend) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The full gateway called in this test's own task (no server in between), and an API key."""
    settings = GatewaySettings(
        redis_url=backend.redis_url,
        database_url=backend.database_url,
        admin_token="edge-admin-token",
        access_log=False,
    )
    app = create_app(settings)
    async with (
        lifespan(app),  # what the app starts (flags' loop, metering's flusher) stops with the test
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
    ):
        tenant = (await client.post("/admin/tenants", json={"name": "edge"}, headers=ADMIN)).json()["id"]
        issued = await client.post(f"/admin/tenants/{tenant}/api-keys", json={"name": "k"}, headers=ADMIN)
        yield client, issued.json()["key"]


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
