"""The CLIENT span of an upstream LLM call: GenAI attributes, usage, injected context, metrics once."""

from __future__ import annotations

import httpx
from observability_apps import drive, http_scope
from observability_recorded import Recorded
from opentelemetry.trace import SpanKind, StatusCode

from llmproxy.core import Receive, Scope, Send, report_usage
from llmproxy.observability import TelemetryMiddleware, genai_call


def upstream_calling_app(recorded: Recorded, injected: list[dict[str, str]], chunks: int = 0) -> object:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        with genai_call(
            "chat",
            provider="openai",
            request_model="gpt-4o",
            server_address="api.example",
            server_port=443,
            stream=chunks > 0,
            telemetry=recorded.telemetry,
        ) as call:
            headers: dict[str, str] = {}
            call.inject(headers)
            injected.append(headers)
            for _ in range(chunks):
                call.chunk()
            call.response(
                model="gpt-4o-2024-08-06",
                response_id="chatcmpl-1",
                input_tokens=7,
                output_tokens=9,
                finish_reasons=["stop"],
            )
        report_usage(model="gpt-4o", input_tokens=7, output_tokens=9)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(chunks):
            await send({"type": "http.response.body", "body": b"data: x\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"done", "more_body": False})

    return app


async def test_the_client_span_is_a_child_of_the_request_and_carries_the_genai_attributes(
    recorded: Recorded,
) -> None:
    injected: list[dict[str, str]] = []
    app = TelemetryMiddleware(upstream_calling_app(recorded, injected), telemetry=recorded.telemetry)  # type: ignore[arg-type]
    await drive(app, http_scope())
    client, server = recorded.spans()
    assert client.kind is SpanKind.CLIENT
    assert client.name == "chat gpt-4o"
    assert client.parent is not None
    assert client.parent.span_id == server.context.span_id
    assert dict(client.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "server.address": "api.example",
        "server.port": 443,
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.response.id": "chatcmpl-1",
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 9,
        "gen_ai.response.finish_reasons": ("stop",),
    }
    [headers] = injected
    trace_id, span_id = format(client.context.trace_id, "032x"), format(client.context.span_id, "016x")
    version, sent_trace, sent_span, flags = headers["traceparent"].split("-")
    assert (version, sent_trace, sent_span) == ("00", trace_id, span_id)
    assert int(flags, 16) & 1  # sampled


async def test_genai_metrics_are_recorded_once_by_the_client_call(recorded: Recorded) -> None:
    app = TelemetryMiddleware(upstream_calling_app(recorded, [], chunks=4), telemetry=recorded.telemetry)  # type: ignore[arg-type]
    await drive(app, http_scope())
    [(attributes, duration)] = recorded.points("gen_ai.client.operation.duration")
    assert duration.count == 1
    assert attributes["server.address"] == "api.example"
    assert attributes["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert {a["gen_ai.token.type"]: p.sum for a, p in recorded.points("gen_ai.client.token.usage")} == {
        "input": 7,
        "output": 9,
    }
    [(_, first)] = recorded.points("gen_ai.client.operation.time_to_first_chunk")
    [(_, per_chunk)] = recorded.points("gen_ai.client.operation.time_per_output_chunk")
    assert (first.count, per_chunk.count) == (1, 3)
    [(_seed, count)] = recorded.points("llmproxy.requests")  # the business metrics still come from the edge
    assert count == 1


async def test_a_failed_call_sets_error_type_and_status(recorded: Recorded) -> None:
    try:
        with genai_call("chat", provider="openai", request_model="m", telemetry=recorded.telemetry):
            raise httpx.ConnectError("refused")
    except httpx.ConnectError:
        pass
    [span] = recorded.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "httpx.ConnectError"
    [(attributes, _)] = recorded.points("gen_ai.client.operation.duration")
    assert attributes["error.type"] == "httpx.ConnectError"


def test_without_telemetry_a_call_does_nothing() -> None:
    with genai_call("chat", provider="openai") as call:
        headers: dict[str, str] = {}
        call.inject(headers)
        call.chunk()
        call.response(model="m", input_tokens=1)
    assert headers == {}
