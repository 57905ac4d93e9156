"""The Prometheus exposition, parsed with prometheus_client's own parser; the /metrics endpoints."""

from __future__ import annotations

import io
from collections.abc import Iterator
from wsgiref.util import setup_testing_defaults

import httpx
import pytest
from observability_apps import Authenticated, llm_app
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from llmproxy.observability import (
    Telemetry,
    TelemetryMiddleware,
    TelemetryWSGIMiddleware,
    configure_telemetry,
)


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    handle = configure_telemetry(prometheus=True, set_global=False, environ={})
    yield handle
    handle.shutdown()


async def scrape_after_a_chat(telemetry: Telemetry) -> dict[str, list[Sample]]:
    app = TelemetryMiddleware(Authenticated(llm_app()), telemetry=telemetry)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        await client.post("/v1/chat/completions", json={"model": "gpt-4o-mini"})
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {}
    for family in text_string_to_metric_families(response.text):
        families[family.name] = (family.type, family.samples)
    return families  # type: ignore[return-value]


async def test_counters_appear_with_a_single_total_suffix(telemetry: Telemetry) -> None:
    families = await scrape_after_a_chat(telemetry)
    kind, samples = families["llmproxy_requests"]  # type: ignore[misc]
    assert kind == "counter"
    [sample] = [s for s in samples if s.name == "llmproxy_requests_total"]
    assert sample.value == 1
    assert sample.labels == {
        "llmproxy_status": "success",
        "gen_ai_request_model": "gpt-4o-mini",
        "gen_ai_provider_name": "openai",
    }
    kind, samples = families["llmproxy_tokens_processed"]  # type: ignore[misc]
    totals = {s.labels["gen_ai_token_type"]: s.value for s in samples if s.name.endswith("_total")}
    assert totals == {"input": 12, "output": 34}


async def test_histograms_appear_in_base_units_with_the_conventions_buckets(telemetry: Telemetry) -> None:
    families = await scrape_after_a_chat(telemetry)
    kind, samples = families["http_server_request_duration_seconds"]  # type: ignore[misc]
    assert kind == "histogram"
    bounds = [s.labels["le"] for s in samples if s.name.endswith("_bucket")]
    expected = ["0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1.0", "2.5", "5.0"]
    assert bounds == [*expected, "7.5", "10.0", "+Inf"]
    [count] = [s for s in samples if s.name == "http_server_request_duration_seconds_count"]
    assert count.value == 1
    assert count.labels["http_route"] == "/v1/chat/completions"
    kind, samples = families["gen_ai_client_token_usage"]  # type: ignore[misc]
    assert kind == "histogram"
    assert [s.labels["le"] for s in samples if s.name.endswith("_bucket")][-2:] == ["67108864", "+Inf"]
    assert families["gen_ai_client_operation_duration_seconds"][0] == "histogram"  # type: ignore[index]
    assert families["llmproxy_request_duration_seconds"][0] == "histogram"  # type: ignore[index]


async def test_up_down_counters_appear_as_gauges(telemetry: Telemetry) -> None:
    families = await scrape_after_a_chat(telemetry)
    for name in ("http_server_active_requests", "llmproxy_active_connections"):
        kind, samples = families[name]  # type: ignore[misc]
        assert kind == "gauge"
        assert all(s.value == 0 for s in samples)
    assert "target_info" in families


async def test_the_scrape_itself_is_not_traced_or_measured(telemetry: Telemetry) -> None:
    app = TelemetryMiddleware(llm_app(), telemetry=telemetry)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        await client.get("/metrics")
        text = (await client.get("/metrics")).text
    assert "http_server_request_duration_seconds_count" not in text


def test_the_wsgi_app_serves_the_same_exposition(telemetry: Telemetry) -> None:
    telemetry.metrics.record_request(None, "m", "openai", 1, 2, 0.1, True)

    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        raise AssertionError("the scrape must not reach the app")

    middleware = TelemetryWSGIMiddleware(app, telemetry=telemetry)  # type: ignore[arg-type]
    environ: dict[str, object] = {"PATH_INFO": "/metrics", "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    statuses: list[str] = []
    body = b"".join(middleware(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    assert statuses == ["200 OK"]
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert "llmproxy_requests" in names


async def test_without_prometheus_the_metrics_app_answers_404() -> None:
    handle = configure_telemetry(set_global=False, environ={})
    try:
        sent: list[dict[str, object]] = []

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        await handle.metrics_app()({"type": "http", "method": "GET", "headers": []}, None, send)  # type: ignore[arg-type]
        assert sent[0]["status"] == 404
    finally:
        handle.shutdown()
