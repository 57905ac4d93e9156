"""The ASGI and WSGI middlewares and the worker-loop context manager: one event per request, at its end."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import httpx
import pytest

from llmproxy.core import (
    ManualClock,
    Message,
    Receive,
    RequestContext,
    Scope,
    Send,
    StartResponse,
    WSGIEnviron,
    async_redis_from_url,
    bind_context_to_environ,
    bind_context_to_scope,
    closing,
    redis_from_url,
    report_usage,
    reset_current_context,
)
from llmproxy.core.testing import Backend
from llmproxy.metering import (
    AsyncMeteringClient,
    MeteringClient,
    MeteringMiddleware,
    WSGIMeteringMiddleware,
    bucket_key,
)

TENANT = uuid.UUID("00000000-0000-4000-8000-000000000001")


def with_tenant(app: Any, tenant: uuid.UUID | None = TENANT) -> Any:
    """Stands for auth: an outer middleware that puts the caller's context in the scope."""

    async def outer(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            ctx = RequestContext(
                tenant_id=tenant,
                api_key_id="key-1",
                endpoint=scope["path"],
                request_id=dict(scope["headers"]).get(b"x-request-id", b"r").decode(),
            )
            bind_context_to_scope(scope, ctx)
        await app(scope, receive, send)

    return outer


async def chat(scope: Scope, receive: Receive, send: Send) -> None:
    """A streaming handler: three chunks, usage reported as it goes."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for i in range(1, 4):
        report_usage(model="gpt-4o-mini", input_tokens=10, output_tokens=i * 5, final=i == 3)
        await send({"type": "http.response.body", "body": b"chunk", "more_body": i < 3})


def hash_of(redis: Any, clock: ManualClock) -> dict[str, int]:
    raw = redis.hgetall(bucket_key(TENANT, int(clock.now()) // 3600))
    return {k.decode(): int(v) for k, v in raw.items()}


async def test_a_streamed_response_is_recorded_once_after_its_last_chunk(
    redis_url: str, clock: ManualClock
) -> None:
    client = AsyncMeteringClient(async_redis_from_url(redis_url), clock=clock)
    app = with_tenant(MeteringMiddleware(chat, client=client, clock=clock.now))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        response = await http.post("/v1/chat/completions", headers={"x-request-id": "req-a"})
    assert response.status_code == 200
    await client.flush()
    fields = hash_of(redis_from_url(redis_url), clock)
    assert fields["requests"] == 1
    assert fields["input_tokens"] == 10
    assert fields["output_tokens"] == 15
    assert fields["r\tgpt-4o-mini\tkey-1\t/v1/chat/completions"] == 1


async def test_a_client_that_disconnects_mid_stream_is_charged_what_was_streamed(
    redis_url: str, clock: ManualClock
) -> None:
    client = AsyncMeteringClient(async_redis_from_url(redis_url), clock=clock)
    app = with_tenant(MeteringMiddleware(chat, client=client, clock=clock.now))
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and len(sent) == 3:
            raise OSError("client went away")  # what a server's send does once the client is gone

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [],
        "query_string": b"",
    }
    with pytest.raises(OSError, match="went away"):
        await app(scope, receive, send)
    await client.flush()
    fields = hash_of(redis_from_url(redis_url), clock)
    assert fields["requests"] == 1
    assert fields["output_tokens"] == 10  # two chunks' worth


async def test_anonymous_requests_and_other_scopes_are_not_metered(
    redis_url: str, clock: ManualClock
) -> None:
    client = AsyncMeteringClient(async_redis_from_url(redis_url), clock=clock)
    app = with_tenant(MeteringMiddleware(chat, client=client, clock=clock.now), tenant=None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        assert (await http.post("/v1/chat/completions")).status_code == 200
    await client.flush()
    assert client.stats.recorded == 0
    assert redis_from_url(redis_url).keys("metering:*") == []


async def test_requests_outside_paths_are_not_metered(redis_url: str, clock: ManualClock) -> None:
    client = AsyncMeteringClient(async_redis_from_url(redis_url), clock=clock)
    app = with_tenant(MeteringMiddleware(chat, client=client, clock=clock.now, paths=["/v1/embeddings"]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        assert (await http.post("/v1/chat/completions")).status_code == 200
        await client.flush()
        assert client.stats.recorded == 0
        assert (await http.post("/v1/embeddings")).status_code == 200
    await client.flush()
    assert client.stats.recorded == 1
    with pytest.raises(ValueError, match="paths"):
        MeteringMiddleware(chat, client=client, paths=["v1"])


def wsgi_chat(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("content-type", "text/plain")])

    def body() -> Iterable[bytes]:
        for i in range(1, 4):
            report_usage(model="m", input_tokens=7, output_tokens=i, final=i == 3)
            yield b"x"

    return body()


def test_the_wsgi_middleware_records_when_the_server_closes_the_body(
    redis_url: str, clock: ManualClock
) -> None:
    redis = redis_from_url(redis_url)
    client = MeteringClient(redis, clock=clock)
    middleware = WSGIMeteringMiddleware(wsgi_chat, client=client, clock=clock.now)

    def app(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        ctx = RequestContext(tenant_id=TENANT, endpoint="/v1/x", request_id="w1")
        token = bind_context_to_environ(environ, ctx)
        # as an auth middleware does: the context ends when the server closes the body (this test's thread
        # is the server's: left set, it would be every later test's current context)
        return closing(middleware(environ, start_response), lambda: reset_current_context(token))

    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://t") as http:
        assert http.get("/v1/x").text == "xxx"
    client.flush()
    fields = hash_of(redis, clock)
    assert (fields["requests"], fields["input_tokens"], fields["output_tokens"]) == (1, 7, 3)


def test_track_records_one_event_for_a_block_of_work(redis_url: str, clock: ManualClock) -> None:
    redis = redis_from_url(redis_url)
    client = MeteringClient(redis, clock=clock)
    ctx = RequestContext(tenant_id=TENANT, request_id="job-1")
    with client.track(ctx, model="batch-model") as t:
        t.report(input_tokens=40, output_tokens=2)

    def failing_job() -> None:
        with client.track(ctx.replace(request_id="job-2"), model="batch-model"):
            report_usage(input_tokens=1)
            raise RuntimeError("the job failed")

    with pytest.raises(RuntimeError):
        failing_job()
    client.flush()
    fields = hash_of(redis, clock)
    assert fields["requests"] == 2
    assert fields["input_tokens"] == 41
    assert fields["model:batch-model"] == 2


def test_track_inside_another_block_shares_its_usage_channel(redis_url: str, clock: ManualClock) -> None:
    from llmproxy.core import Usage, reset_usage, use_usage

    redis = redis_from_url(redis_url)
    client = MeteringClient(redis, clock=clock)
    outer = Usage()  # e.g. quota's guard around the block
    token = use_usage(outer)
    try:
        with client.track(RequestContext(tenant_id=TENANT, endpoint="job"), model="m") as tracker:
            assert tracker.usage is outer
            report_usage(input_tokens=5, output_tokens=6)
    finally:
        reset_usage(token)
    assert (outer.model, outer.total_tokens) == ("m", 11)  # the guard settles what metering records
    client.flush()
    fields = hash_of(redis, clock)
    assert (fields["requests"], fields["input_tokens"], fields["output_tokens"]) == (1, 5, 6)


def test_a_metered_function_is_tracked_with_the_current_context(redis_url: str, clock: ManualClock) -> None:
    from llmproxy.core import use_context

    redis = redis_from_url(redis_url)
    client = MeteringClient(redis, clock=clock)

    @client.metered(model="fn-model")
    def job() -> str:
        report_usage(input_tokens=3, output_tokens=4)
        return "done"

    with use_context(RequestContext(tenant_id=TENANT, request_id="fn-1")):
        assert job() == "done"
    client.flush()
    assert hash_of(redis, clock)["output_tokens"] == 4


async def test_redis_cut_on_the_request_path_leaves_requests_unaffected_and_counts_the_losses(
    proxied_backend: Backend, clock: ManualClock
) -> None:
    assert proxied_backend.redis_proxy is not None
    from llmproxy.core import fail_fast_redis_options

    redis = async_redis_from_url(
        proxied_backend.redis_url, **fail_fast_redis_options(proxied_backend.redis_url)
    )
    client = AsyncMeteringClient(redis, clock=clock)
    app = with_tenant(MeteringMiddleware(chat, client=client, clock=clock.now))
    proxied_backend.redis_proxy.cut()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        statuses = [
            (await http.post("/v1/chat/completions", headers={"x-request-id": f"r{i}"})).status_code
            for i in range(20)
        ]
    await client.flush()
    assert statuses == [200] * 20
    stats = client.write_behind.stats
    assert stats.failed + stats.dropped >= 20
    await redis.aclose()
