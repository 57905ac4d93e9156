"""The edge: refusals are core's EdgeErrors, the bound context is reset when a request ends, and a request
with more than one Authorization header is refused (ASGI and WSGI, through a real WSGI server)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
import pytest
from fastapi import FastAPI

from llmproxy.auth import (
    ApiKeyService,
    AsyncApiKeyService,
    Authenticator,
    AuthError,
    AuthMiddleware,
    AuthUnavailable,
    AuthWSGIMiddleware,
    DuplicateAuthorization,
    InvalidApiKey,
    JWTVerifier,
    MissingCredentials,
    PolicyDenied,
    PolicyGuard,
    TenantAdmin,
    WSGIPolicyGuard,
    add_exception_handlers,
    bearer_token,
    single_authorization,
)
from llmproxy.auth.testing import TEST_HS_SECRET
from llmproxy.core import (
    EdgeError,
    Scope,
    StartResponse,
    WSGIEnviron,
    current_context,
    send_error,
    wsgi_error,
)

GARBAGE = "Bearer sk-llmp-" + "G" * 43


# -- refusals are EdgeErrors -------------------------------------------------------------------------------


async def test_an_auth_error_is_sent_by_cores_send_error_with_its_challenge() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await send_error(send, InvalidApiKey("Incorrect API key provided."))

    headers = dict(sent[0]["headers"])
    assert sent[0]["status"] == 401
    assert headers[b"www-authenticate"] == (
        b'Bearer realm="llmproxy", error="invalid_token", error_description="Incorrect API key provided."'
    )
    assert json.loads(sent[1]["body"])["error"]["code"] == "invalid_api_key"


def test_an_unavailable_store_is_a_503_with_retry_after_through_cores_wsgi_error() -> None:
    started: list[tuple[str, list[tuple[str, str]]]] = []

    body = wsgi_error(lambda status, headers: started.append((status, headers)), AuthUnavailable("later"))

    status, headers = started[0]
    assert status == "503 Service Unavailable"
    assert ("retry-after", "1") in headers
    assert all(name != "www-authenticate" for name, _ in headers)
    assert json.loads(b"".join(body))["error"]["type"] == "service_unavailable"


def test_every_auth_error_is_an_edge_error_and_a_realm_changes_only_the_challenge() -> None:
    error = MissingCredentials("You didn't provide an API key.")

    other = error.for_realm("api")

    assert isinstance(error, EdgeError)
    assert (other.status, other.code, other.body()) == (401, "missing_credentials", error.body())
    assert dict(other.headers)["www-authenticate"].startswith('Bearer realm="api", error="invalid_token"')
    assert PolicyDenied("no").headers == ()  # 403: no challenge


@pytest.mark.parametrize("realm", ['a"b', "a\\b", "", "caf\u00e9", "a\r\nX-Evil: 1"])
def test_a_realm_that_cannot_stand_in_the_header_is_refused(realm: str) -> None:
    authenticator = Authenticator(jwt=JWTVerifier(algorithms=("HS256",), keys={"hs": TEST_HS_SECRET}))
    app = asgi_app([])

    with pytest.raises(ValueError, match="realm"):
        AuthMiddleware(app, authenticator=authenticator, realm=realm)
    with pytest.raises(ValueError, match="realm"):
        AuthWSGIMiddleware(wsgi_outside, authenticator=authenticator, realm=realm)
    with pytest.raises(ValueError, match="realm"):
        PolicyGuard(app, TenantAdmin(), realm=realm)
    with pytest.raises(ValueError, match="realm"):
        WSGIPolicyGuard(lambda e, s: [], TenantAdmin(), realm=realm)
    with pytest.raises(ValueError, match="realm"):
        add_exception_handlers(FastAPI(), realm=realm)


async def test_the_exception_handlers_answer_in_their_realm() -> None:
    app = FastAPI()
    add_exception_handlers(app, realm="admin")

    @app.get("/x")
    async def refuse() -> None:
        raise MissingCredentials("Authentication required.")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        response = await client.get("/x")

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer realm="admin", error="invalid_token"')
    assert response.json()["error"]["code"] == "missing_credentials"


# -- ASGI: the context is reset, one Authorization header only ----------------------------------------------


@pytest.fixture
async def secret(api_keys: AsyncApiKeyService, tenant_id: uuid.UUID) -> str:
    return (await api_keys.create(tenant_id, "k")).secret


def asgi_app(seen: list[Any], *, fail: bool = False) -> Any:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        ctx = current_context()
        seen.append(ctx)
        if fail:
            raise RuntimeError("boom")
        body = json.dumps({"tenant": str(ctx.tenant_id) if ctx else None}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


async def call(app: Any, headers: list[tuple[bytes, bytes]], path: str = "/v1/x") -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "http", "path": path, "headers": headers}, receive, send)
    return sent


def bearer(token: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {token}".encode())


async def test_asgi_the_context_is_the_requests_inside_and_reset_after(
    api_keys: AsyncApiKeyService, secret: str, tenant_id: uuid.UUID
) -> None:
    seen: list[Any] = []
    app = AuthMiddleware(asgi_app(seen), authenticator=Authenticator(api_keys=api_keys), public_paths=("/p",))

    await call(app, [bearer(secret)])
    await call(app, [], path="/p")

    assert seen[0].tenant_id == tenant_id
    assert isinstance(seen[0].tenant_id, uuid.UUID)
    assert seen[1] is not None
    assert seen[1].tenant_id is None  # the public path's anonymous context, not the previous request's
    assert current_context() is None


async def test_asgi_the_context_is_reset_when_the_app_raises(
    api_keys: AsyncApiKeyService, secret: str
) -> None:
    app = AuthMiddleware(asgi_app([], fail=True), authenticator=Authenticator(api_keys=api_keys))

    with pytest.raises(RuntimeError):
        await call(app, [bearer(secret)])

    assert current_context() is None


@pytest.mark.parametrize("order", ["valid first", "garbage first", "the same twice"])
async def test_asgi_two_authorization_headers_are_a_400_that_never_reaches_the_app(
    api_keys: AsyncApiKeyService, secret: str, order: str
) -> None:
    valid = f"Bearer {secret}".encode()
    pairs = {"valid first": (valid, GARBAGE.encode()), "garbage first": (GARBAGE.encode(), valid)}
    first, second = pairs.get(order, (valid, valid))
    seen: list[Any] = []
    app = AuthMiddleware(asgi_app(seen), authenticator=Authenticator(api_keys=api_keys))

    sent = await call(app, [(b"authorization", first), (b"Authorization", second)])

    assert seen == []
    assert sent[0]["status"] == 400
    error = json.loads(sent[1]["body"])["error"]
    assert (error["code"], error["param"], error["type"]) == (
        "duplicate_authorization",
        "Authorization",
        "invalid_request_error",
    )
    assert b'error="invalid_request"' in dict(sent[0]["headers"])[b"www-authenticate"]


async def test_asgi_one_header_holding_two_credentials_is_a_400(
    api_keys: AsyncApiKeyService, secret: str
) -> None:
    app = AuthMiddleware(asgi_app([]), authenticator=Authenticator(api_keys=api_keys))

    sent = await call(app, [(b"authorization", f"Bearer {secret}, {GARBAGE}".encode())])

    assert sent[0]["status"] == 400


def test_one_authorization_value_is_taken_and_several_refused() -> None:
    assert single_authorization([]) is None
    assert single_authorization([b"Bearer a"]) == b"Bearer a"
    with pytest.raises(DuplicateAuthorization):
        single_authorization([b"Bearer a", b"Bearer a"])
    with pytest.raises(DuplicateAuthorization):
        bearer_token("Bearer a,Bearer b")
    assert isinstance(DuplicateAuthorization("x"), AuthError)


# -- WSGI, through a real server ---------------------------------------------------------------------------


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def wsgi_inner(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("content-type", "application/json")])

    def body() -> Iterator[bytes]:  # iterated after the app returned: the context must still be bound
        ctx = current_context()
        yield json.dumps({"tenant": str(ctx.tenant_id) if ctx and ctx.tenant_id else None}).encode()

    return body()


def wsgi_outside(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
    """An app the auth middleware does not wrap, served by the same server thread."""
    ctx = current_context()
    start_response("200 OK", [("content-type", "application/json")])
    return [json.dumps({"context": None if ctx is None else str(ctx.tenant_id)}).encode()]


@pytest.fixture
def served(keys: ApiKeyService) -> Iterator[Callable[[], httpx.Client]]:
    """A single-threaded wsgiref server (every request on one thread): /outside is not authenticated."""
    auth = AuthWSGIMiddleware(wsgi_inner, authenticator=Authenticator(api_keys=keys))

    def dispatch(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        app = wsgi_outside if environ["PATH_INFO"] == "/outside" else auth
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, dispatch, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield lambda: httpx.Client(base_url=f"http://127.0.0.1:{server.server_port}", timeout=10)
    finally:
        server.shutdown()
        server.server_close()


def test_wsgi_the_context_lasts_through_the_body_and_is_reset_after(
    served: Callable[[], httpx.Client], keys: ApiKeyService, tenant_id: uuid.UUID
) -> None:
    secret = keys.create(tenant_id, "k").secret
    with served() as client:
        inside = client.get("/v1/x", headers={"authorization": f"Bearer {secret}"})
        outside = client.get("/outside")

    assert inside.json() == {"tenant": str(tenant_id)}
    assert outside.json() == {"context": None}


@pytest.mark.parametrize("order", ["valid first", "garbage first"])
def test_wsgi_two_authorization_headers_a_server_folds_are_a_400(
    served: Callable[[], httpx.Client], keys: ApiKeyService, tenant_id: uuid.UUID, order: str
) -> None:
    valid = f"Bearer {keys.create(tenant_id, 'k').secret}"
    values = [valid, GARBAGE] if order == "valid first" else [GARBAGE, valid]
    with served() as client:
        response = client.get("/v1/x", headers=[("authorization", v) for v in values])

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "duplicate_authorization"


def test_wsgi_the_context_is_reset_when_the_app_raises(keys: ApiKeyService, tenant_id: uuid.UUID) -> None:
    def failing(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        raise RuntimeError("boom")

    app = AuthWSGIMiddleware(failing, authenticator=Authenticator(api_keys=keys))
    secret = keys.create(tenant_id, "k").secret
    environ = {"PATH_INFO": "/v1/x", "HTTP_AUTHORIZATION": f"Bearer {secret}"}

    with pytest.raises(RuntimeError):
        app(environ, lambda status, headers: None)

    assert current_context() is None
