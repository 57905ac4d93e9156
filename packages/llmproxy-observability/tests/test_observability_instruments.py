"""Exact names, units, bucket boundaries and attribute sets of every instrument (in-memory reader)."""

from __future__ import annotations

import httpx
import pytest
from observability_apps import TENANT, Authenticated, drive, http_scope, llm_app, streaming_app
from observability_recorded import Recorded

from llmproxy.observability import TelemetryMiddleware

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
GENAI_DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)

EXPECTED = {
    # name: (unit, kind of data point, bucket boundaries or None)
    "http.server.request.duration": ("s", "histogram", HTTP_BUCKETS),
    "http.server.active_requests": ("{request}", "sum", None),
    "gen_ai.client.operation.duration": ("s", "histogram", GENAI_DURATION_BUCKETS),
    "gen_ai.client.token.usage": ("{token}", "histogram", TOKEN_BUCKETS),
    "llmproxy.requests": ("{request}", "sum", None),
    "llmproxy.tokens.processed": ("{token}", "sum", None),
    "llmproxy.request.duration": ("s", "histogram", GENAI_DURATION_BUCKETS),
    "llmproxy.tokens.per_request": ("{token}", "histogram", TOKEN_BUCKETS),
    "llmproxy.active_connections": ("{connection}", "sum", None),
}
GENAI = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
}


async def chat(recorded: Recorded, body: object, *, provider: str = "openai") -> httpx.Response:
    app = TelemetryMiddleware(Authenticated(llm_app()), telemetry=recorded.telemetry, provider_name=provider)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://testserver"
    ) as client:
        return await client.post("/v1/chat/completions", json=body)


async def test_a_chat_completion_records_every_instrument_with_its_unit_and_buckets(
    recorded: Recorded,
) -> None:
    response = await chat(recorded, {"model": "gpt-4o-mini"})
    assert response.status_code == 200
    metrics = recorded.metrics()
    for name, (unit, kind, buckets) in EXPECTED.items():
        assert name in metrics, name
        assert metrics[name].unit == unit, name
        point = metrics[name].data.data_points[0]
        if kind == "histogram":
            assert tuple(point.explicit_bounds) == buckets, name  # type: ignore[union-attr]
        else:
            assert not hasattr(point, "explicit_bounds"), name


async def test_http_duration_carries_the_stable_http_attributes_and_route_template(
    recorded: Recorded,
) -> None:
    await chat(recorded, {"model": "gpt-4o-mini"})
    [(attributes, point)] = recorded.points("http.server.request.duration")
    assert attributes == {
        "http.request.method": "POST",
        "url.scheme": "http",
        "http.response.status_code": 200,
        "network.protocol.version": "1.1",
        "http.route": "/v1/chat/completions",
    }
    assert point.count == 1
    [(active, value)] = recorded.points("http.server.active_requests")
    assert active == {"http.request.method": "POST", "url.scheme": "http"}
    assert value == 0


async def test_genai_metrics_carry_operation_provider_and_model(recorded: Recorded) -> None:
    await chat(recorded, {"model": "gpt-4o-mini"}, provider="azure.ai.openai")
    expected = {**GENAI, "gen_ai.provider.name": "azure.ai.openai"}
    [(attributes, _)] = recorded.points("gen_ai.client.operation.duration")
    assert attributes == expected
    usage = {a["gen_ai.token.type"]: p for a, p in recorded.points("gen_ai.client.token.usage")}
    assert set(usage) == {"input", "output"}
    assert (usage["input"].sum, usage["output"].sum) == (12, 34)
    for attributes, _ in recorded.points("gen_ai.client.token.usage"):
        assert {k: v for k, v in attributes.items() if k != "gen_ai.token.type"} == expected


async def test_seed_metrics_count_requests_and_tokens_without_identity_labels(recorded: Recorded) -> None:
    await chat(recorded, {"model": "gpt-4o-mini"})
    await chat(recorded, {"model": "gpt-4o-mini"})
    base = {
        "llmproxy.status": "success",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.provider.name": "openai",
    }
    assert recorded.points("llmproxy.requests") == [(base, 2)]
    tokens = {a["gen_ai.token.type"]: v for a, v in recorded.points("llmproxy.tokens.processed")}
    assert tokens == {"input": 24, "output": 68}
    [(attributes, per_request)] = recorded.points("llmproxy.tokens.per_request")
    assert attributes == base
    assert (per_request.count, per_request.sum) == (2, 92)
    assert recorded.points("llmproxy.active_connections") == [({}, 0)]
    assert all("llmproxy.tenant.id" not in a for a, _ in recorded.points("llmproxy.requests"))


async def test_a_failed_llm_request_counts_an_error_typed_by_its_exception(recorded: Recorded) -> None:
    response = await chat(recorded, {"model": "gpt-4o-mini", "fail": True})
    assert response.status_code == 500
    [(attributes, value)] = recorded.points("llmproxy.errors")
    assert value == 1
    assert attributes["llmproxy.status"] == "error"
    assert attributes["error.type"] == "RuntimeError"  # the exception's class, not just its 500
    [(genai, _)] = recorded.points("gen_ai.client.operation.duration")
    assert genai["error.type"] == "RuntimeError"
    [(http, _)] = recorded.points("http.server.request.duration")
    assert http["error.type"] == "RuntimeError"
    assert http["http.response.status_code"] == 500


async def test_a_stream_records_time_to_first_chunk_once_and_per_chunk_n_minus_one_times(
    recorded: Recorded,
) -> None:
    chunks = 7
    app = TelemetryMiddleware(streaming_app(chunks), telemetry=recorded.telemetry)
    await drive(app, http_scope())
    [(attributes, first)] = recorded.points("gen_ai.client.operation.time_to_first_chunk")
    [(per_attributes, per_chunk)] = recorded.points("gen_ai.client.operation.time_per_output_chunk")
    assert first.count == 1
    assert per_chunk.count == chunks - 1
    assert attributes == per_attributes == GENAI
    assert tuple(first.explicit_bounds) == GENAI_DURATION_BUCKETS
    assert recorded.metrics()["gen_ai.client.operation.time_to_first_chunk"].unit == "s"


@pytest.mark.parametrize("chunks", [31, 33, 100])
async def test_a_long_stream_records_every_chunk_interval_in_lots(recorded: Recorded, chunks: int) -> None:
    """Intervals are recorded CHUNK_BATCH at a time and the rest at the end: none lost, none twice."""
    from llmproxy.observability._request import CHUNK_BATCH

    assert chunks > CHUNK_BATCH or chunks == 31
    app = TelemetryMiddleware(streaming_app(chunks), telemetry=recorded.telemetry)
    await drive(app, http_scope())
    [(_, per_chunk)] = recorded.points("gen_ai.client.operation.time_per_output_chunk")
    assert per_chunk.count == chunks - 1
    assert sum(per_chunk.bucket_counts) == chunks - 1


async def test_a_one_part_response_records_no_chunk_metrics(recorded: Recorded) -> None:
    await chat(recorded, {"model": "gpt-4o-mini"})
    assert recorded.points("gen_ai.client.operation.time_to_first_chunk") == []
    assert recorded.points("gen_ai.client.operation.time_per_output_chunk") == []


async def test_a_fastapi_stream_is_measured_to_its_last_chunk(recorded: Recorded) -> None:
    await chat(recorded, {"model": "gpt-4o-mini", "chunks": 4})
    [(_, per_chunk)] = recorded.points("gen_ai.client.operation.time_per_output_chunk")
    assert per_chunk.count == 3
    usage = {a["gen_ai.token.type"]: p.sum for a, p in recorded.points("gen_ai.client.token.usage")}
    assert usage == {"input": 12, "output": 4}  # the last report, after the last chunk


async def test_routes_outside_genai_routes_record_only_http_metrics(recorded: Recorded) -> None:
    app = TelemetryMiddleware(llm_app(), telemetry=recorded.telemetry)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t"
    ) as client:
        assert (await client.get(f"/admin/tenants/{TENANT}")).status_code == 200
    assert len(recorded.points("http.server.request.duration")) == 1
    assert recorded.points("gen_ai.client.operation.duration") == []
    assert recorded.points("llmproxy.requests") == []


def test_record_request_alone_records_the_seed_instruments(recorded: Recorded) -> None:
    recorded.telemetry.metrics.record_request(TENANT, "gpt-4o", "openai", 3, 4, 0.25, True)
    recorded.telemetry.metrics.record_request(
        TENANT, "gpt-4o", "openai", 1, 0, 0.5, False, error_type="timeout"
    )
    ok = {"llmproxy.status": "success", "gen_ai.request.model": "gpt-4o", "gen_ai.provider.name": "openai"}
    failed = {**ok, "llmproxy.status": "error"}
    assert sorted(recorded.points("llmproxy.requests"), key=str) == sorted([(ok, 1), (failed, 1)], key=str)
    assert recorded.points("llmproxy.errors") == [({**failed, "error.type": "timeout"}, 1)]
    durations = {a["llmproxy.status"]: p.sum for a, p in recorded.points("llmproxy.request.duration")}
    assert durations == {"success": 0.25, "error": 0.5}


@pytest.mark.parametrize("method", ["BREW", "get"])
async def test_an_unknown_method_is_recorded_as_other(recorded: Recorded, method: str) -> None:
    app = TelemetryMiddleware(streaming_app(1, usage=False), telemetry=recorded.telemetry)
    await drive(app, http_scope(method=method, path="/x"))
    [(attributes, _)] = recorded.points("http.server.request.duration")
    assert attributes["http.request.method"] == "_OTHER"
    [span] = recorded.spans()
    assert span.attributes is not None
    assert span.attributes["http.request.method_original"] == method
    assert span.name == "HTTP"
