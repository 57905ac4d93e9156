"""The ASGI middleware's SERVER span: route template, propagation, identity, status, streams, annotations."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from observability_apps import TENANT, Authenticated, drive, http_scope, llm_app, streaming_app
from observability_recorded import Recorded
from opentelemetry.trace import SpanKind, StatusCode

from llmproxy.core import Message, Receive, Scope, Send
from llmproxy.observability import TelemetryMiddleware

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


def client(app: object) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_the_span_is_a_server_span_named_after_the_route_template(recorded: Recorded) -> None:
    app = TelemetryMiddleware(llm_app(), telemetry=recorded.telemetry)
    async with client(app) as http:
        await http.get(f"/admin/tenants/{TENANT}?verbose=1")
    [span] = recorded.spans()
    assert span.kind is SpanKind.SERVER
    assert span.name == "GET /admin/tenants/{tenant_id}"
    assert span.attributes is not None
    assert span.attributes["http.route"] == "/admin/tenants/{tenant_id}"
    assert span.attributes["url.path"] == f"/admin/tenants/{TENANT}"
    assert span.attributes["url.query"] == "verbose=1"
    assert span.attributes["http.response.status_code"] == 200
    assert span.status.status_code is StatusCode.UNSET


async def test_credentials_in_the_query_never_reach_the_span(recorded: Recorded) -> None:
    app = TelemetryMiddleware(llm_app(), telemetry=recorded.telemetry)
    async with client(app) as http:
        await http.get("/admin/tenants/x?key=secret1&page=2&sig=secret2&api_key=secret3")
    [span] = recorded.spans()
    assert (span.attributes or {})["url.query"] == "key=REDACTED&page=2&sig=REDACTED&api_key=REDACTED"


async def test_an_unmatched_path_has_no_route_and_the_method_as_its_name(recorded: Recorded) -> None:
    app = TelemetryMiddleware(llm_app(), telemetry=recorded.telemetry)
    async with client(app) as http:
        assert (await http.get("/nowhere/123")).status_code == 404
    [span] = recorded.spans()
    assert span.name == "GET"
    assert span.attributes is not None
    assert "http.route" not in span.attributes
    [(attributes, _)] = recorded.points("http.server.request.duration")
    assert "http.route" not in attributes


async def test_a_traceparent_makes_the_request_span_its_child(recorded: Recorded) -> None:
    app = TelemetryMiddleware(llm_app(), telemetry=recorded.telemetry)
    async with client(app) as http:
        await http.get(
            "/admin/tenants/x",
            headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "vendor=value"},
        )
    [span] = recorded.spans()
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == PARENT_ID
    assert span.context.trace_state.get("vendor") == "value"


async def test_without_traceparent_each_request_starts_its_own_trace(recorded: Recorded) -> None:
    app = TelemetryMiddleware(llm_app(), telemetry=recorded.telemetry)
    async with client(app) as http:
        await http.get("/admin/tenants/a")
        await http.get("/admin/tenants/b")
    first, second = recorded.spans()
    assert first.parent is None
    assert second.parent is None
    assert first.context.trace_id != second.context.trace_id


async def test_tenant_key_user_request_id_model_and_usage_are_span_attributes(recorded: Recorded) -> None:
    app = TelemetryMiddleware(Authenticated(llm_app()), telemetry=recorded.telemetry)
    async with client(app) as http:
        await http.post("/v1/chat/completions", json={"model": "gpt-4o-mini"})
    [span] = recorded.spans()
    assert span.attributes is not None
    attributes = dict(span.attributes)
    assert attributes["llmproxy.tenant.id"] == TENANT
    assert attributes["llmproxy.api_key.id"] == "key-1"
    assert attributes["llmproxy.user.id"] == "user-1"
    assert attributes["llmproxy.request.id"] == "req-1"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "gpt-4o-mini"  # what the handler reported wins
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (12, 34)


async def test_other_concerns_annotate_the_request_span_without_spans_of_their_own(
    recorded: Recorded,
) -> None:
    app = TelemetryMiddleware(llm_app(), telemetry=recorded.telemetry)
    async with client(app) as http:
        await http.post("/v1/chat/completions", json={"model": "gpt-4o-mini"})
    [span] = recorded.spans()
    assert span.attributes is not None
    assert span.attributes["llmproxy.quota.allowed"] is True
    assert span.attributes["llmproxy.quota.remaining"] == 9
    [event] = span.events
    assert event.name == "feature_flag.evaluation"
    assert dict(event.attributes or {}) == {"feature_flag.key": "new-ui", "feature_flag.result.variant": "on"}


async def test_a_5xx_answer_is_an_error_with_its_status_as_error_type(recorded: Recorded) -> None:
    app = TelemetryMiddleware(llm_app(), telemetry=recorded.telemetry)
    async with client(app) as http:
        assert (await http.get("/boom")).status_code == 503
    [span] = recorded.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "503"


async def test_a_4xx_answer_is_not_a_server_error(recorded: Recorded) -> None:
    app = TelemetryMiddleware(llm_app(), telemetry=recorded.telemetry)
    async with client(app) as http:
        assert (await http.post("/v1/chat/completions", content=b"not json")).status_code == 422
    [span] = recorded.spans()
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes is not None
    assert "error.type" not in span.attributes


async def test_an_escaping_exception_is_recorded_and_propagates(recorded: Recorded) -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise KeyError("missing")

    app = TelemetryMiddleware(broken, telemetry=recorded.telemetry)
    with pytest.raises(KeyError):
        await drive(app, http_scope(path="/x"))
    [span] = recorded.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "KeyError"
    assert span.attributes["http.response.status_code"] == 500
    assert [event.name for event in span.events] == ["exception"]
    [(_active, value)] = recorded.points("http.server.active_requests")
    assert value == 0


async def test_a_stream_span_ends_after_its_last_chunk(recorded: Recorded) -> None:
    sent_at: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for index in range(3):
            await asyncio.sleep(0.01)
            await send({"type": "http.response.body", "body": b"x", "more_body": index < 2})
            import time

            sent_at.append(time.time_ns())

    await drive(TelemetryMiddleware(app, telemetry=recorded.telemetry), http_scope(path="/stream"))
    [span] = recorded.spans()
    assert span.end_time is not None
    assert span.end_time >= sent_at[-1]


async def test_a_client_disconnect_mid_stream_ends_the_span_and_is_marked(recorded: Recorded) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        message = await receive()  # the client went away
        assert message["type"] == "http.disconnect"

    messages = iter([{"type": "http.disconnect"}])

    async def receive() -> Message:
        return next(messages)

    async def send(message: Message) -> None:
        pass

    await TelemetryMiddleware(app, telemetry=recorded.telemetry)(http_scope(path="/v1/x"), receive, send)
    [span] = recorded.spans()
    assert span.attributes is not None
    assert span.attributes["llmproxy.client.disconnected"] is True
    assert recorded.points("http.server.active_requests")[0][1] == 0


async def test_non_http_scopes_pass_through_untraced(recorded: Recorded) -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    await TelemetryMiddleware(app, telemetry=recorded.telemetry)({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan"]
    assert recorded.spans() == []


async def test_excluded_paths_are_not_traced(recorded: Recorded) -> None:
    app = TelemetryMiddleware(streaming_app(1), telemetry=recorded.telemetry, excluded_paths=["/healthz"])
    await drive(app, http_scope(method="GET", path="/healthz"))
    assert recorded.spans() == []
    assert recorded.points("http.server.request.duration") == []


async def test_the_handler_sees_the_request_span_as_current(recorded: Recorded) -> None:
    from opentelemetry import trace

    seen: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(trace.get_current_span().get_span_context().span_id)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    await drive(TelemetryMiddleware(app, telemetry=recorded.telemetry), http_scope(path="/x"))
    [span] = recorded.spans()
    assert seen == [span.context.span_id]
    assert not trace.get_current_span().get_span_context().is_valid  # reset after the request


def test_the_middleware_refuses_to_start_without_telemetry() -> None:
    import subprocess
    import sys

    code = (
        "from llmproxy.observability import TelemetryMiddleware\n"
        "try:\n    TelemetryMiddleware(lambda *a: None)\nexcept ValueError as exc:\n    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "configure_telemetry" in result.stdout, result.stderr
