"""The ASGI and WSGI middleware, the decorator, the context managers and the FastAPI dependency."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from llmproxy.core import (
    ASGIApp,
    Receive,
    RequestContext,
    Scope,
    Send,
    StartResponse,
    WSGIEnviron,
    bind_context_to_environ,
    bind_context_to_scope,
    closing,
    current_context,
    reset_current_context,
)
from llmproxy.flags import (
    Evaluator,
    FeatureDisabled,
    Flag,
    FlagContext,
    FlagsMiddleware,
    FlagsWSGIMiddleware,
    Snapshot,
    add_exception_handlers,
    require_flag,
)

ALLOWED = uuid.UUID("00000000-0000-4000-8000-000000000001")
OTHER = uuid.UUID("00000000-0000-4000-8000-000000000002")


@pytest.fixture
def flags() -> Evaluator:
    return Evaluator(
        Snapshot.of(
            [
                Flag(key="llm_gateway", enabled_for_tenants={ALLOWED}),
                Flag(key="streaming", enabled_for_tenants={ALLOWED}),
                Flag(key="beta", default_value=True),
            ]
        )
    )


class FakeAuth:
    """Stands where auth does: the tenant comes from a header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tenant = dict(scope["headers"]).get(b"x-tenant")
        ctx = RequestContext.from_scope(scope).replace(tenant_id=tenant.decode() if tenant else None)
        token = bind_context_to_scope(scope, ctx)
        try:
            await self.app(scope, receive, send)
        finally:
            reset_current_context(token)


async def echo_flags(scope: Scope, receive: Receive, send: Send) -> None:
    ctx = current_context()
    body = repr(dict(ctx.flags) if ctx else None).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


def asgi_client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_a_required_flag_that_is_off_answers_403_feature_disabled(flags: Evaluator) -> None:
    app = FakeAuth(FlagsMiddleware(echo_flags, flags=flags, require={"/v1/": "llm_gateway"}))
    async with asgi_client(app) as client:
        refused = await client.post("/v1/chat/completions", headers={"x-tenant": str(OTHER)})
        allowed = await client.post("/v1/chat/completions", headers={"x-tenant": str(ALLOWED)})
        elsewhere = await client.get("/healthz", headers={"x-tenant": str(OTHER)})
    assert refused.status_code == 403
    assert refused.json() == {
        "error": {
            "message": "The feature 'llm_gateway' is not enabled for this caller.",
            "type": "permission_error",
            "code": "feature_disabled",
            "param": None,
        }
    }
    assert (allowed.status_code, elsewhere.status_code) == (200, 200)


async def test_an_undefined_required_flag_fails_closed_unless_told_otherwise(flags: Evaluator) -> None:
    closed = FakeAuth(FlagsMiddleware(echo_flags, flags=flags, require={"/x/": "typo"}))
    opened = FakeAuth(FlagsMiddleware(echo_flags, flags=flags, require={"/x/": "typo"}, missing=True))
    async with asgi_client(closed) as a, asgi_client(opened) as b:
        assert (await a.get("/x/1")).status_code == 403
        assert (await b.get("/x/1")).status_code == 200


async def test_exposed_flags_reach_the_app_in_the_request_context_and_are_reset_after(
    flags: Evaluator,
) -> None:
    app = FakeAuth(FlagsMiddleware(echo_flags, flags=flags, expose=["streaming", "beta", "unknown"]))
    async with asgi_client(app) as client:
        response = await client.get("/v1/models", headers={"x-tenant": str(ALLOWED)})
        other = await client.get("/v1/models", headers={"x-tenant": str(OTHER)})
    assert response.text == repr({"streaming": True, "beta": True, "unknown": False})
    assert other.text == repr({"streaming": False, "beta": True, "unknown": False})
    assert current_context() is None


async def test_non_http_scopes_pass_through(flags: Evaluator) -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    middleware = FlagsMiddleware(app, flags=flags, require={"/": "llm_gateway"})
    await middleware({"type": "lifespan"}, _never, _never)
    assert seen == ["lifespan"]


async def _never(*_: Any) -> Any:
    raise AssertionError("not called")


def test_a_bad_rule_is_refused_when_the_middleware_is_built(flags: Evaluator) -> None:
    with pytest.raises(ValueError, match="path prefix"):
        FlagsMiddleware(echo_flags, flags=flags, require={"v1": "llm_gateway"})


# -- WSGI


def wsgi_echo(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
    ctx = current_context()
    start_response("200 OK", [("content-type", "text/plain")])
    return [repr(dict(ctx.flags) if ctx else None).encode()]


def wsgi_auth(app: Any) -> Any:
    def wrapped(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        tenant = environ.get("HTTP_X_TENANT")
        token = bind_context_to_environ(
            environ, RequestContext.from_environ(environ).replace(tenant_id=tenant)
        )
        return closing(app(environ, start_response), lambda: reset_current_context(token))

    return wrapped


def test_the_wsgi_twin_refuses_and_exposes_alike(flags: Evaluator) -> None:
    app = wsgi_auth(
        FlagsWSGIMiddleware(wsgi_echo, flags=flags, require={"/v1/": "llm_gateway"}, expose=["streaming"])
    )
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://test") as client:
        refused = client.get("/v1/models", headers={"x-tenant": str(OTHER)})
        allowed = client.get("/v1/models", headers={"x-tenant": str(ALLOWED)})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "feature_disabled"
    assert allowed.text == repr({"streaming": True})
    assert current_context() is None  # reset when the server closed the body


# -- worker loops


def test_requires_checks_the_context_given_by_use(flags: Evaluator) -> None:
    calls: list[str] = []

    @flags.requires("streaming")
    def stream(job: str) -> str:
        calls.append(job)
        return job.upper()

    with flags.use(FlagContext(tenant_id=ALLOWED)):
        assert stream("a") == "A"
    with flags.use(FlagContext(tenant_id=OTHER)), pytest.raises(FeatureDisabled) as caught:
        stream("b")
    assert caught.value.key == "streaming"
    assert calls == ["a"]
    with pytest.raises(FeatureDisabled):
        stream("no context at all")


async def test_requires_wraps_coroutine_functions_too(flags: Evaluator) -> None:
    @flags.requires("llm_gateway")
    async def job() -> int:
        return 7

    with flags.use(FlagContext(tenant_id=ALLOWED)):
        assert await job() == 7
    with pytest.raises(FeatureDisabled):
        await job()


def test_guard_runs_the_block_only_when_the_flag_is_on(flags: Evaluator) -> None:
    ran = []
    with flags.guard("beta"):
        ran.append("beta")
    with pytest.raises(FeatureDisabled), flags.guard("streaming", FlagContext(tenant_id=OTHER)):
        ran.append("streaming")
    assert ran == ["beta"]


async def test_when_enabled_async_awaits_the_chosen_branch(flags: Evaluator) -> None:
    async def on() -> str:
        return "on"

    ctx = FlagContext(tenant_id=ALLOWED)
    assert await flags.when_enabled_async("streaming", ctx, on, lambda: "off") == "on"
    assert (
        await flags.when_enabled_async("streaming", FlagContext(tenant_id=OTHER), on, lambda: "off") == "off"
    )
    assert flags.when_enabled("beta", None, lambda: 1, lambda: 2) == 1


# -- FastAPI


async def test_the_fastapi_dependency_answers_the_openai_style_403(flags: Evaluator) -> None:
    api = FastAPI()
    add_exception_handlers(api)

    @api.get("/streamed", dependencies=[Depends(require_flag(flags, "streaming"))])
    async def streamed() -> dict[str, str]:
        return {"ok": "yes"}

    async with asgi_client(FakeAuth(api)) as client:
        refused = await client.get("/streamed", headers={"x-tenant": str(OTHER)})
        allowed = await client.get("/streamed", headers={"x-tenant": str(ALLOWED)})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "feature_disabled"
    assert allowed.json() == {"ok": "yes"}
