"""QuotaMiddleware (pure ASGI): rejections, headers, body replay, settling at a stream's end or disconnect."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from llmproxy.core import Message, RequestContext, Scope, bind_context_to_scope, report_usage
from llmproxy.quota import AsyncQuotaClient, QuotaMiddleware

CHAT = "/v1/chat/completions"


def estimate_from_body(scope: Scope, body: bytes) -> int:
    return int(json.loads(body)["max_tokens"]) if body else 0


async def call(
    app: Any,
    tenant: uuid.UUID | None,
    body: bytes = b"",
    *,
    fail_send_after: int | None = None,
    api_key: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Drive ``app`` like an ASGI server (with an auth stand-in that sets the RequestContext)."""
    scope: Scope = {"type": "http", "method": "POST", "path": CHAT, "headers": [], "query_string": b""}
    if tenant is not None:
        bind_context_to_scope(scope, RequestContext(tenant_id=str(tenant), api_key_id=api_key, endpoint=CHAT))
    messages = [{"type": "http.request", "body": body[:3], "more_body": True},
                {"type": "http.request", "body": body[3:], "more_body": False}]  # fmt: skip
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        bodies = [m for m in sent if m["type"] == "http.response.body"]
        if (
            fail_send_after is not None
            and message["type"] == "http.response.body"
            and len(bodies) >= fail_send_after
        ):
            raise OSError("client disconnected")
        sent.append(message)

    try:
        await app(scope, receive, send)
    except OSError:
        pass
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


async def echo_app(scope: Scope, receive: Any, send: Any) -> None:
    message = await receive()
    report_usage(input_tokens=7, output_tokens=3)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": message["body"]})


async def streaming_app(scope: Scope, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for i in range(1, 5):
        report_usage(input_tokens=10, output_tokens=5 * i, final=False)
        await send({"type": "http.response.body", "body": b"data: chunk\n\n", "more_body": True})
    report_usage(input_tokens=10, output_tokens=20, final=True)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


@pytest.fixture
def middleware(aclient: AsyncQuotaClient) -> Any:
    def make(app: Any, **kw: Any) -> QuotaMiddleware:
        return QuotaMiddleware(app, client=aclient, estimate_tokens=estimate_from_body, **kw)

    return make


async def test_the_body_is_re_fed_to_the_app_and_rate_limit_headers_are_added(
    middleware: Any, tenant: uuid.UUID
) -> None:
    body = json.dumps({"max_tokens": 100}).encode()
    status, headers, out = await call(middleware(echo_app), tenant, body)
    assert status == 200
    assert out == body
    assert headers["content-type"] == "text/plain"
    assert headers["x-ratelimit-limit-requests"] == "1000"
    assert headers["x-ratelimit-remaining-requests"] == "999"
    assert headers["x-ratelimit-reset-requests"] == "60ms"
    assert headers["x-ratelimit-limit-tokens"] == "100000"
    assert headers["x-ratelimit-remaining-tokens"] == "99900"


async def test_reported_usage_settles_the_reservation(
    middleware: Any, aclient: AsyncQuotaClient, tenant: uuid.UUID
) -> None:
    await call(middleware(echo_app), tenant, json.dumps({"max_tokens": 100}).encode())
    assert (await aclient.check(tenant, "tokens_per_day", 0)).current_usage == 10


async def test_a_stream_settles_at_its_end_with_the_final_usage(
    middleware: Any, aclient: AsyncQuotaClient, tenant: uuid.UUID
) -> None:
    status, _, _ = await call(middleware(streaming_app), tenant, json.dumps({"max_tokens": 500}).encode())
    assert status == 200
    assert (await aclient.check(tenant, "tokens_per_day", 0)).current_usage == 30


async def test_a_client_disconnect_settles_with_the_tokens_streamed_so_far(
    middleware: Any, aclient: AsyncQuotaClient, tenant: uuid.UUID
) -> None:
    await call(middleware(streaming_app), tenant, json.dumps({"max_tokens": 500}).encode(), fail_send_after=2)
    usage = await aclient.check(tenant, "tokens_per_day", 0)
    assert usage.current_usage == 25  # the third chunk's report (10 in + 15 out) came before its send failed


async def test_an_app_error_without_usage_refunds_the_estimate(
    middleware: Any, aclient: AsyncQuotaClient, tenant: uuid.UUID
) -> None:
    async def failing(scope: Scope, receive: Any, send: Any) -> None:
        raise RuntimeError("upstream exploded")

    with pytest.raises(RuntimeError):
        await call(middleware(failing), tenant, json.dumps({"max_tokens": 500}).encode())
    assert (await aclient.check(tenant, "tokens_per_day", 0)).current_usage == 0


async def test_a_rejected_request_gets_429_with_an_openai_error_and_retry_after(
    middleware: Any, limits: Any, tenant: uuid.UUID
) -> None:
    limits.configure(rpm=1)
    app = middleware(echo_app)
    await call(app, tenant, b'{"max_tokens": 1}')
    status, headers, body = await call(app, tenant, b'{"max_tokens": 1}')
    assert status == 429
    error = json.loads(body)["error"]
    assert (error["type"], error["code"]) == ("rate_limit_exceeded", "rate_limit_exceeded")
    assert "tenant.requests_per_minute" in error["message"]
    assert headers["retry-after"] == "60"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-limit-requests"] == "1"


async def test_an_exhausted_day_budget_is_insufficient_quota(
    middleware: Any, limits: Any, tenant: uuid.UUID
) -> None:
    limits.configure(tpd=100)
    status, _, body = await call(middleware(echo_app), tenant, b'{"max_tokens": 101}')
    assert status == 429
    assert json.loads(body)["error"]["type"] == "insufficient_quota"


async def test_a_request_without_a_tenant_passes_through_by_default(middleware: Any) -> None:
    status, headers, _ = await call(middleware(echo_app), None, b'{"max_tokens": 1}')
    assert status == 200
    assert "x-ratelimit-limit-requests" not in headers


async def test_a_request_without_a_tenant_gets_401_when_a_tenant_is_required(middleware: Any) -> None:
    status, _, body = await call(middleware(echo_app, require_tenant=True), None, b"{}")
    assert status == 401
    assert json.loads(body)["error"]["code"] == "missing_tenant"


async def test_an_unknown_tenant_gets_403(aclient: AsyncQuotaClient) -> None:
    from llmproxy.quota import StaticLimits

    aclient.limits_source = StaticLimits(defaults=None)
    status, _, body = await call(QuotaMiddleware(echo_app, client=aclient), uuid.uuid4())
    assert status == 403
    assert json.loads(body)["error"]["code"] == "unknown_tenant"


async def test_a_body_over_the_bound_gets_413(middleware: Any, tenant: uuid.UUID) -> None:
    status, _, _ = await call(
        middleware(echo_app, max_body_bytes=10), tenant, b'{"max_tokens": 1, "pad": "xxxxxxxx"}'
    )
    assert status == 413


async def test_non_http_scopes_pass_through(middleware: Any) -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    await middleware(app)({"type": "lifespan"}, None, None)
    assert seen == ["lifespan"]


async def test_a_starlette_stream_cancelled_by_disconnect_settles_what_was_reported(
    middleware: Any, aclient: AsyncQuotaClient, tenant: uuid.UUID
) -> None:
    import asyncio

    StreamingResponse = pytest.importorskip("starlette.responses").StreamingResponse

    two_chunks_out = asyncio.Event()

    async def tokens() -> Any:
        for i in range(1, 100):
            report_usage(input_tokens=10, output_tokens=i, final=False)
            yield b"data: token\n\n"
            await asyncio.sleep(0)

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await StreamingResponse(tokens())(scope, receive, send)

    scope: Scope = {"type": "http", "method": "POST", "path": CHAT, "headers": [], "query_string": b""}
    bind_context_to_scope(scope, RequestContext(tenant_id=str(tenant), endpoint=CHAT))
    requests = [{"type": "http.request", "body": b'{"max_tokens": 500}', "more_body": False}]
    chunks: list[bytes] = []

    async def receive() -> Message:
        if requests:
            return requests.pop()
        await two_chunks_out.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            chunks.append(message["body"])
            if len(chunks) == 2:
                two_chunks_out.set()

    await middleware(app)(scope, receive, send)
    usage = (await aclient.check(tenant, "tokens_per_day", 0)).current_usage
    assert 2 <= len(chunks) < 99
    assert 10 + 2 <= usage <= 10 + len(chunks) + 1  # what was reported when the stream was cancelled
    assert usage < 500


async def test_a_request_outside_paths_passes_untouched(
    middleware: Any, aclient: AsyncQuotaClient, tenant: uuid.UUID
) -> None:
    body = json.dumps({"max_tokens": 100}).encode()
    status, headers, out = await call(middleware(echo_app, paths=["/admin/"]), tenant, body)
    assert (status, out) == (200, body[:3])  # the app read the raw stream: its first chunk, not a replay
    assert not any(name.startswith("x-ratelimit-") for name in headers)  # not admitted, not charged
    assert (await aclient.check(tenant, "tokens_per_day", 0)).current_usage == 0
    status, headers, _ = await call(middleware(echo_app, paths=["/admin/", "/v1/"]), tenant, body)
    assert status == 200
    assert headers["x-ratelimit-remaining-requests"] == "999"


@pytest.mark.parametrize(
    ("paths", "error"),
    [("/v1/", TypeError), (["v1/"], ValueError), ([""], ValueError), ([None], ValueError)],
)
def test_paths_must_be_prefixes_starting_with_a_slash(
    aclient: AsyncQuotaClient, paths: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="paths"):
        QuotaMiddleware(echo_app, client=aclient, paths=paths)
