"""A real OTLP/HTTP export to a local receiver, decoded with opentelemetry-proto."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from observability_apps import Authenticated, llm_app

from llmproxy.observability import Telemetry, TelemetryMiddleware, configure_telemetry
from llmproxy.observability.testing import OTLPReceiver


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as running:
        yield running


@pytest.fixture
def exporting(receiver: OTLPReceiver) -> Iterator[Telemetry]:
    telemetry = configure_telemetry(
        service_name="otlp-test",
        service_version="9.9",
        environment="ci",
        otlp_endpoint=receiver.endpoint,
        set_global=False,
        environ={},
    )
    yield telemetry
    telemetry.shutdown()


async def chat(telemetry: Telemetry) -> None:
    app = TelemetryMiddleware(Authenticated(llm_app()), telemetry=telemetry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.post("/v1/chat/completions", json={"model": "gpt-4o-mini"})).status_code == 200


async def test_spans_reach_the_collector_with_the_resource(
    receiver: OTLPReceiver, exporting: Telemetry
) -> None:
    await chat(exporting)
    exporting.force_flush()
    assert receiver.wait_for(lambda r: bool(r.spans()))
    [span] = receiver.spans()
    assert span.name == "POST /v1/chat/completions"
    assert span.kind == 2  # SPAN_KIND_SERVER
    assert span.scope == "llmproxy.observability"
    assert span.attributes["http.route"] == "/v1/chat/completions"
    assert span.attributes["gen_ai.usage.output_tokens"] == 34
    assert span.resource["service.name"] == "otlp-test"
    assert span.resource["service.version"] == "9.9"
    assert span.resource["deployment.environment.name"] == "ci"


async def test_metrics_reach_the_collector_with_their_buckets(
    receiver: OTLPReceiver, exporting: Telemetry
) -> None:
    await chat(exporting)
    exporting.force_flush()
    assert receiver.wait_for(lambda r: any(r.metric("gen_ai.client.token.usage")))
    [usage] = receiver.metric("gen_ai.client.token.usage")
    assert usage.kind == "histogram"
    assert usage.unit == "{token}"
    by_type = {attributes["gen_ai.token.type"]: value for attributes, value in usage.points}
    assert (by_type["input"]["sum"], by_type["output"]["sum"]) == (12, 34)
    assert by_type["input"]["bounds"][:3] == [1, 4, 16]
    [requests] = receiver.metric("llmproxy.requests")
    assert requests.kind == "sum"
    assert [value for _, value in requests.points] == [1]
    [duration] = receiver.metric("http.server.request.duration")
    assert duration.points[0][1]["bounds"][0] == 0.005


def test_logs_reach_the_collector_with_the_trace_of_their_request(
    receiver: OTLPReceiver, exporting: Telemetry
) -> None:
    log = logging.getLogger("otlp-test")
    log.setLevel(logging.INFO)
    with exporting.tracer.start_as_current_span("work") as span:
        log.info("inside the span", extra={"tokens": 3})
    exporting.force_flush()
    assert receiver.wait_for(lambda r: any(record.body == "inside the span" for record in r.logs()))
    [record] = [record for record in receiver.logs() if record.body == "inside the span"]
    assert record.trace_id == format(span.get_span_context().trace_id, "032x")
    assert record.span_id == format(span.get_span_context().span_id, "016x")
    assert record.attributes["tokens"] == 3
    assert record.severity == "INFO"
