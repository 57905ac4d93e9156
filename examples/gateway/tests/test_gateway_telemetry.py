"""Telemetry through the gateway: /metrics in the embedded demo, one trace from client to upstream."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmproxy.observability.testing import OTLPReceiver, ReceivedSpan

from .conftest import GatewayProcess, start_gateway

HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello!"}]}
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
SERVER, CLIENT = 2, 3  # OTLP span kinds


def test_the_embedded_demo_serves_prometheus_metrics(embedded_gateway: GatewayProcess) -> None:
    headers = {"authorization": f"Bearer {embedded_gateway.api_key}"}
    response = httpx.post(f"{embedded_gateway.base_url}/v1/chat/completions", json=HELLO, headers=headers)
    assert response.status_code == 200
    scrape = httpx.get(f"{embedded_gateway.base_url}/metrics")
    assert scrape.status_code == 200
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scrape.text)
        for sample in family.samples
    }
    requests = [v for (name, labels), v in samples.items() if name == "llmproxy_requests_total"]
    assert sum(requests) >= 1
    routes = {
        dict(labels).get("http_route")
        for (name, labels), _ in samples.items()
        if name == "http_server_request_duration_seconds_count"
    }
    assert "/v1/chat/completions" in routes
    providers = {
        dict(labels)["gen_ai_provider_name"]
        for (name, labels), _ in samples.items()
        if name == "gen_ai_client_operation_duration_seconds_count"
    }
    assert providers == {"llmproxy.mock"}


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as running:
        yield running


@pytest.fixture
def chained(
    receiver: OTLPReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """A front gateway (provider=openai) whose upstream is a second gateway (mock), both exporting."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # export spans within 0.1 s
    upstream = start_gateway(
        tmp_path / "upstream",
        redis_url=f"memory://up-{secrets.token_hex(4)}",
        database_url=f"sqlite:///{tmp_path / 'upstream.db'}",
        name="upstream",
        otlp_endpoint=receiver.endpoint,
        environment="upstream",
    )
    front: GatewayProcess | None = None
    try:
        upstream.provision("upstream-tenant")
        front = start_gateway(
            tmp_path / "front",
            redis_url=f"memory://front-{secrets.token_hex(4)}",
            database_url=f"sqlite:///{tmp_path / 'front.db'}",
            name="front",
            otlp_endpoint=receiver.endpoint,
            environment="front",
            provider="openai",
            upstream_base_url=f"{upstream.base_url}/v1",
            upstream_api_key=upstream.api_key,
        )
        front.provision("front-tenant")
        yield front, upstream
    finally:
        if front is not None:
            front.stop()
        upstream.stop()


def test_access_log_lines_carry_the_trace_of_their_request(embedded_gateway: GatewayProcess) -> None:
    import json
    import time

    headers = {
        "authorization": f"Bearer {embedded_gateway.api_key}",
        "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
    }
    assert (
        httpx.post(
            f"{embedded_gateway.base_url}/v1/chat/completions", json=HELLO, headers=headers
        ).status_code
        == 200
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in embedded_gateway.logs().splitlines() if line.startswith("{")]
        traced = [
            line
            for line in lines
            if line.get("message") == "request" and line.get("trace_id") == CLIENT_TRACE
        ]
        if traced:
            break
        time.sleep(0.05)
    assert traced, "no access log line with the request's trace id"
    assert len(traced[0]["span_id"]) == 16


def _spans_of_trace(receiver: OTLPReceiver, trace_id: str) -> list[ReceivedSpan]:
    return [span for span in receiver.spans() if span.trace_id == trace_id]


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True])
def test_one_chat_completion_is_one_trace_from_the_client_through_both_gateways(
    chained: tuple[GatewayProcess, GatewayProcess], receiver: OTLPReceiver, stream: bool
) -> None:
    front, _ = chained
    headers = {
        "authorization": f"Bearer {front.api_key}",
        "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
    }
    body = {**HELLO, "stream": stream}
    response = httpx.post(f"{front.base_url}/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text

    def complete(r: OTLPReceiver) -> bool:
        kinds = [
            (s.kind, s.resource.get("deployment.environment.name")) for s in _spans_of_trace(r, CLIENT_TRACE)
        ]
        return {(SERVER, "front"), (CLIENT, "front"), (SERVER, "upstream")} <= set(kinds)

    assert receiver.wait_for(complete, timeout=20), receiver.spans()
    spans = _spans_of_trace(receiver, CLIENT_TRACE)
    assert len(spans) == 3  # one span per hop: no second SERVER span from FastAPI's own instrumentation
    [front_server] = [
        s for s in spans if s.kind == SERVER and s.resource["deployment.environment.name"] == "front"
    ]
    [front_client] = [s for s in spans if s.kind == CLIENT]
    [upstream_server] = [
        s for s in spans if s.kind == SERVER and s.resource["deployment.environment.name"] == "upstream"
    ]
    assert front_server.parent_span_id == CLIENT_SPAN  # the caller's traceparent was honoured
    assert front_client.parent_span_id == front_server.span_id
    assert upstream_server.parent_span_id == front_client.span_id  # injected into the upstream request
    assert front_server.name == upstream_server.name == "POST /v1/chat/completions"
    assert front_client.name == "chat gpt-4o-mini"
    assert front_client.attributes["gen_ai.provider.name"] == "openai"
    assert front_client.attributes["gen_ai.usage.output_tokens"] > 0
    assert front_server.attributes["llmproxy.auth.outcome"] == "authenticated"
    assert front_server.attributes["llmproxy.quota.allowed"] is True
    assert front_server.attributes["llmproxy.tenant.id"] == front.tenant_id
    assert front_server.resource["service.instance.id"] != upstream_server.resource["service.instance.id"]
