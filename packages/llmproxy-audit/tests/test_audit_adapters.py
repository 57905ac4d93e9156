"""The adapters: ASGI and WSGI middleware publishing llm_request_completed, @audited and audit_block."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterable
from typing import Any

import pytest

from llmproxy.audit import (
    AsyncAuditPublisher,
    AuditEvent,
    AuditMiddleware,
    AuditOptions,
    AuditPublisher,
    WSGIAuditMiddleware,
    audit_block,
    audited,
)
from llmproxy.core import (
    SCOPE_KEY,
    Message,
    Receive,
    RequestContext,
    Scope,
    Send,
    StartResponse,
    WSGIEnviron,
    report_usage,
)

from .conftest import unique_options
from .helpers import published

PROMPT = "please keep this prompt private"


@pytest.fixture
def options() -> AuditOptions:
    return unique_options()


def events(url: str, options: AuditOptions) -> list[AuditEvent]:
    return [AuditEvent.model_validate_json(body) for body in published(url, options)]


def scope(path: str = "/v1/chat/completions", ctx: RequestContext | None = None) -> Scope:
    s: Scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"user-agent", b"t/1")]}
    if ctx is not None:
        s[SCOPE_KEY] = ctx
    return s


async def call(app: Any, s: Scope, on_send: Any = None) -> list[Message]:
    sent: list[Message] = []
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}]}).encode()
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)
        if on_send is not None:
            await on_send(message)

    await app(s, receive, send)
    return sent


def streaming_app(status: int = 200) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": status, "headers": []})
        report_usage(model="gpt-4o-mini", input_tokens=12, output_tokens=1, final=False)
        await send({"type": "http.response.body", "body": b"chunk-1", "more_body": True})
        report_usage(model="gpt-4o-mini", input_tokens=12, output_tokens=7)
        await send({"type": "http.response.body", "body": b"chunk-2", "more_body": False})

    return app


async def test_asgi_publishes_model_tokens_status_and_duration_when_the_response_ends(
    options: AuditOptions, embedded_redis_url: str
) -> None:
    publisher = AsyncAuditPublisher.from_url(embedded_redis_url, options)
    tenant = uuid.uuid4()
    ctx = RequestContext(tenant_id=tenant, api_key_id="key-1")
    await call(AuditMiddleware(streaming_app(), publisher=publisher), scope(ctx=ctx))
    await publisher.aclose()
    (event,) = events(embedded_redis_url, options)
    assert event.action == "llm_request_completed"
    assert event.tenant_id == tenant
    assert event.actor_type == "api_key"
    assert event.entity_id == ctx.request_id
    meta = event.metadata
    assert (meta["model"], meta["input_tokens"], meta["output_tokens"], meta["status"]) == (
        "gpt-4o-mini",
        12,
        7,
        200,
    )
    assert meta["duration_ms"] >= 0
    assert meta["completed"] is True


async def test_asgi_never_publishes_the_prompt_or_the_completion(
    options: AuditOptions, embedded_redis_url: str
) -> None:
    publisher = AsyncAuditPublisher.from_url(embedded_redis_url, options)
    await call(AuditMiddleware(streaming_app(), publisher=publisher), scope())
    await publisher.aclose()
    (raw,) = published(embedded_redis_url, options)
    assert PROMPT.encode() not in raw
    assert b"chunk-" not in raw


async def test_asgi_publishes_only_after_the_last_chunk(
    options: AuditOptions, embedded_redis_url: str
) -> None:
    publisher = AsyncAuditPublisher.from_url(embedded_redis_url, options)
    seen_during_stream: list[int] = []

    async def on_send(message: Message) -> None:
        if message.get("more_body"):
            seen_during_stream.append(publisher.stats.published)

    await call(AuditMiddleware(streaming_app(), publisher=publisher), scope(), on_send)
    assert seen_during_stream == [0]
    assert publisher.stats.published == 1
    await publisher.aclose()


@pytest.mark.parametrize(
    ("status", "outcome"), [(200, "success"), (429, "denied"), (403, "denied"), (502, "failure")]
)
async def test_asgi_outcome_follows_the_status(
    status: int, outcome: str, options: AuditOptions, embedded_redis_url: str
) -> None:
    publisher = AsyncAuditPublisher.from_url(embedded_redis_url, options)
    await call(AuditMiddleware(streaming_app(status), publisher=publisher), scope())
    await publisher.aclose()
    assert events(embedded_redis_url, options)[0].outcome == outcome


async def test_asgi_an_app_that_raises_is_published_as_a_500_failure(
    options: AuditOptions, embedded_redis_url: str
) -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    publisher = AsyncAuditPublisher.from_url(embedded_redis_url, options)
    with pytest.raises(RuntimeError):
        await call(AuditMiddleware(broken, publisher=publisher), scope())
    await publisher.aclose()
    event = events(embedded_redis_url, options)[0]
    assert (event.outcome, event.metadata["status"]) == ("failure", 500)


async def test_asgi_paths_outside_the_prefixes_and_other_scopes_pass_through(
    options: AuditOptions, embedded_redis_url: str
) -> None:
    publisher = AsyncAuditPublisher.from_url(embedded_redis_url, options)
    middleware = AuditMiddleware(streaming_app(), publisher=publisher)
    await call(middleware, scope("/healthz"))
    reached: list[str] = []

    async def lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["type"])

    await AuditMiddleware(lifespan_app, publisher=publisher)({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    await publisher.aclose()
    assert reached == ["lifespan"]
    assert published(embedded_redis_url, options) == []


def wsgi_app(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
    report_usage(model="gpt-4o", input_tokens=3, output_tokens=4)
    start_response("201 Created", [("content-type", "text/plain")])
    return [b"a", b"b"]


def test_wsgi_publishes_when_the_server_closes_the_body(
    options: AuditOptions, embedded_redis_url: str
) -> None:
    publisher = AuditPublisher.from_url(embedded_redis_url, options)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/embeddings", "REMOTE_ADDR": "10.0.0.9"}
    body = WSGIAuditMiddleware(wsgi_app, publisher=publisher)(environ, lambda *a: None)
    assert b"".join(body) == b"ab"
    assert publisher.stats.published == 0
    body.close()  # type: ignore[attr-defined]
    publisher.close()
    (event,) = events(embedded_redis_url, options)
    assert event.metadata["status"] == 201
    assert event.metadata["total_tokens"] == 7
    assert event.ip_address == "10.0.0.9"


def test_audited_publishes_success_with_the_entity_id_from_the_arguments(
    options: AuditOptions, embedded_redis_url: str
) -> None:
    publisher = AuditPublisher.from_url(embedded_redis_url, options)

    @audited("invoice.send", entity_type="invoice", publisher=publisher, entity_id=lambda n: f"inv-{n}")
    def send_invoice(n: int) -> int:
        return n * 2

    assert send_invoice(21) == 42
    publisher.close()
    (event,) = events(embedded_redis_url, options)
    assert (event.action, event.entity_id, event.outcome) == ("invoice.send", "inv-21", "success")


def test_audited_publishes_a_failure_and_lets_the_error_through(
    options: AuditOptions, embedded_redis_url: str
) -> None:
    publisher = AuditPublisher.from_url(embedded_redis_url, options)

    @audited("job.run", entity_type="job", publisher=lambda: publisher)
    async def job() -> None:
        raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"):
        asyncio.run(job())
    publisher.close()
    (event,) = events(embedded_redis_url, options)
    assert (event.outcome, event.metadata["error"]) == ("failure", "ValueError")


def test_audit_block_publishes_when_the_block_ends(options: AuditOptions, embedded_redis_url: str) -> None:
    publisher = AuditPublisher.from_url(embedded_redis_url, options)
    with audit_block(publisher, "export.run", entity_type="export", entity_id="e1", rows=10):
        assert publisher.stats.published == 0
    publisher.close()
    (event,) = events(embedded_redis_url, options)
    assert event.metadata["rows"] == 10
    assert event.entity_id == "e1"


class Refused(Exception):
    """Stands for flags' FeatureDisabled (403) or quota's QuotaExceeded (429): a refusal naming its status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"refused with {status}")
        self.status = status


@pytest.mark.parametrize(("status", "outcome"), [(403, "denied"), (429, "denied"), (503, "failure")])
def test_audit_block_records_a_refusal_as_denied(
    options: AuditOptions, embedded_redis_url: str, status: int, outcome: str
) -> None:
    publisher = AuditPublisher.from_url(embedded_redis_url, options)
    with pytest.raises(Refused), audit_block(publisher, "job.run", entity_type="job"):
        raise Refused(status)
    publisher.close()
    (event,) = events(embedded_redis_url, options)
    assert (event.outcome, event.metadata["error"], event.metadata["status"]) == (outcome, "Refused", status)


def test_a_publish_that_does_not_validate_is_dropped_and_counted_not_raised(
    options: AuditOptions, embedded_redis_url: str
) -> None:
    publisher = AuditPublisher.from_url(embedded_redis_url, options)
    assert publisher.publish("bad action with spaces", "thing") is False
    assert publisher.publish("ok", "thing", new_values={"x": float("nan")}) is False
    assert publisher.stats.invalid == 2
    publisher.close()
    assert published(embedded_redis_url, options) == []


@pytest.mark.parametrize(
    "values",
    [
        {"blob": "x" * (70 * 1024)},
        {"deep": json.loads("[" * 40 + "]" * 40)},
        {"a set": {1, 2}},
        {"inf": float("inf")},
        {1: "int key"},
    ],
    ids=["oversized", "too-deep", "set", "infinite", "int-key"],
)
def test_publish_refuses_values_the_model_refuses(
    values: dict[Any, Any], options: AuditOptions, embedded_redis_url: str
) -> None:
    publisher = AuditPublisher.from_url(embedded_redis_url, options)
    assert publisher.publish("ok", "thing", new_values=values) is False
    assert publisher.stats.invalid == 1
    publisher.close()
    assert published(embedded_redis_url, options) == []


def test_publish_accepts_several_values_each_under_the_bound_though_larger_together(
    options: AuditOptions, embedded_redis_url: str
) -> None:
    publisher = AuditPublisher.from_url(embedded_redis_url, options)
    half = {"blob": "x" * (40 * 1024)}
    assert publisher.publish("ok", "thing", old_values=half, new_values=half)
    publisher.close()
    assert len(published(embedded_redis_url, options)) == 1


def test_a_publisher_on_an_existing_client_shares_its_write_behind(
    redis_url: str, options: AuditOptions
) -> None:
    from llmproxy.core import WriteBehind, redis_from_url

    redis = redis_from_url(redis_url)
    shared = WriteBehind.for_client(redis)
    publisher = AuditPublisher.on_redis(redis, options)
    assert publisher.sink.write_behind is shared  # type: ignore[attr-defined]
    assert publisher.publish("x.done", "thing", "1", context=RequestContext(tenant_id=uuid.uuid4()))
    publisher.close()  # sends what it queued, leaves the shared write-behind and the client open
    assert [e.action for e in events(redis_url, options)] == ["x.done"]
    assert redis.ping()
    assert shared.enqueue(("PING",))
    shared.close()
    redis.close()


async def test_an_async_publisher_on_an_existing_client_shares_its_write_behind(
    redis_url: str, options: AuditOptions
) -> None:
    from llmproxy.core import AsyncWriteBehind, async_redis_from_url

    redis = async_redis_from_url(redis_url)
    publisher = AsyncAuditPublisher.on_redis(redis, options)
    assert publisher.sink.write_behind is AsyncWriteBehind.for_client(redis)  # type: ignore[attr-defined]
    assert publisher.publish("y.done", "thing", "2", context=RequestContext(tenant_id=uuid.uuid4()))
    await publisher.aclose()
    assert [e.action for e in events(redis_url, options)] == ["y.done"]
    assert await redis.ping()
    await AsyncWriteBehind.for_client(redis).aclose()
    await redis.aclose()
