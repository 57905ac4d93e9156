"""The span encoder writes the bytes the SDK's own OTLP encoder writes; the exporter built on it exports."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from llmproxy.observability import FastOTLPSpanExporter
from llmproxy.observability._otlp_spans import SpanEncoder, varint
from llmproxy.observability.testing import OTLPReceiver

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.text(max_size=300)  # past 127 bytes: two-byte lengths
SCALAR = st.one_of(st.booleans(), INT64, st.floats(allow_nan=True), TEXT)
VALUE = st.one_of(
    SCALAR,
    st.lists(st.booleans(), max_size=4).map(tuple),
    st.lists(INT64, max_size=4).map(tuple),
    st.lists(st.floats(), max_size=4).map(tuple),
    st.lists(TEXT, max_size=4).map(tuple),
)
ATTRIBUTES = st.dictionaries(st.text(min_size=1, max_size=40), VALUE, max_size=12)


def recorded(build: Any) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "encoder-test", "n": 3}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    build(provider)
    provider.shutdown()
    return list(exporter.get_finished_spans())


def stock(spans: list[ReadableSpan]) -> bytes:
    return encode_spans(spans).SerializeToString()


def assert_same(spans: list[ReadableSpan]) -> None:
    ours = SpanEncoder().encode(spans)
    assert ours == stock(spans)
    decoded = ExportTraceServiceRequest.FromString(ours)  # and it is a valid request
    assert sum(len(s.spans) for r in decoded.resource_spans for s in r.scope_spans) == len(spans)


def test_varint() -> None:
    for n in (0, 1, 127, 128, 300, 16383, 16384, 2**32, 2**64 - 1):
        out, value = bytearray(varint(n)), 0
        for shift, byte in enumerate(out):
            value |= (byte & 0x7F) << (7 * shift)
            assert (byte & 0x80 == 0) == (shift == len(out) - 1)
        assert value == n


def test_a_gateway_request_span() -> None:
    attributes = {
        "http.request.method": "POST",
        "url.scheme": "http",
        "url.path": "/v1/chat/completions",
        "http.response.status_code": 200,
        "llmproxy.quota.remaining_requests": 999999951400,
        "llmproxy.quota.allowed": True,
        "llmproxy.tenant.id": "a70e33ee-57d6-4d78-a21d-39e6beac5aaa",
        "gen_ai.usage.input_tokens": 11,
    }

    def build(provider: TracerProvider) -> None:
        tracer = provider.get_tracer("llmproxy.observability")
        for _ in range(3):
            with tracer.start_as_current_span("POST /v1/chat/completions", kind=SpanKind.SERVER) as span:
                span.set_attributes(attributes)

    assert_same(recorded(build))


def test_everything_a_span_can_hold() -> None:
    remote = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "value"), ("other", "x")]),
    )

    def build(provider: TracerProvider) -> None:
        tracer = provider.get_tracer("one", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.26.0")
        other = provider.get_tracer("two", attributes={"scope.attr": "v"})
        parent = set_span_in_context(NonRecordingSpan(remote))
        with tracer.start_as_current_span("server", context=parent, kind=SpanKind.SERVER) as span:
            span.add_event("first", {"n": 1, "list": ("a", "b")})
            span.add_event("empty")
            span.set_status(Status(StatusCode.ERROR, "broke: ünïcode"))
            with other.start_as_current_span("inner", kind=SpanKind.CLIENT, links=[Link(remote, {"l": 2.5})]):
                pass
            with other.start_as_current_span("", kind=SpanKind.CONSUMER) as unnamed:
                unnamed.set_status(Status(StatusCode.OK))
        for kind in (SpanKind.INTERNAL, SpanKind.PRODUCER):
            with tracer.start_as_current_span("k", kind=kind) as span:
                span.set_attribute("big", "x" * 20_000)  # a three-byte length

    assert_same(recorded(build))


def test_spans_of_two_resources() -> None:
    spans = recorded(lambda p: p.get_tracer("a").start_span("one").end())
    spans += recorded(lambda p: p.get_tracer("a").start_span("two").end())
    other = ReadableSpan(
        "three", context=spans[0].context, resource=Resource({"r": 1}, schema_url="https://example.com/s")
    )
    assert_same([spans[0], other, spans[1]])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ATTRIBUTES, min_size=1, max_size=3), st.lists(ATTRIBUTES, max_size=2))
def test_any_attributes(
    span_attributes: list[dict[str, Any]], event_attributes: list[dict[str, Any]]
) -> None:
    def build(provider: TracerProvider) -> None:
        tracer = provider.get_tracer("property")
        for attributes in span_attributes:
            with tracer.start_as_current_span("p", attributes=attributes) as span:
                for event in event_attributes:
                    span.add_event("e", event)

    spans = recorded(build)
    assert_same(spans)
    if any(isinstance(v, float) and math.isnan(v) for a in span_attributes for v in a.values()):
        return  # (NaN is not equal to itself: the bytes above are the check)
    decoded = ExportTraceServiceRequest.FromString(SpanEncoder().encode(spans))
    assert decoded == encode_spans(spans)


def test_a_value_otlp_cannot_hold_is_left_out_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    [recorded_span] = recorded(lambda p: p.get_tracer("x").start_span("s").end())
    span = ReadableSpan(
        "odd",
        context=recorded_span.context,
        resource=recorded_span.resource,
        attributes={"ok": "yes", "huge": 2**64, "small": -(2**64), "object": object(), "after": 1},
    )
    with caplog.at_level(logging.ERROR):
        ours = SpanEncoder().encode([span])
    assert ours == stock([span])
    [decoded] = ExportTraceServiceRequest.FromString(ours).resource_spans[0].scope_spans[0].spans
    assert [kv.key for kv in decoded.attributes] == ["ok", "after"]
    assert sum("Failed to encode key" in r.message for r in caplog.records) >= 3


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as running:
        yield running


def spans_of(n: int) -> list[ReadableSpan]:
    def build(provider: TracerProvider) -> None:
        for i in range(n):
            with provider.get_tracer("export").start_as_current_span(f"s{i}") as span:
                span.set_attribute("i", i)

    return recorded(build)


@pytest.mark.parametrize("fast", [True, False])
def test_the_exporter_delivers_spans_either_way(receiver: OTLPReceiver, fast: bool) -> None:
    exporter = FastOTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")
    assert exporter.fast  # the installed SDK has what the fast path uses
    exporter.fast = fast  # False: the stock encoder (what an SDK without those internals gets)
    assert exporter.export(spans_of(5)) is SpanExportResult.SUCCESS
    assert receiver.wait_for(lambda r: len(r.spans()) == 5)
    assert sorted(s.name for s in receiver.spans()) == [f"s{i}" for i in range(5)]
    assert {s.attributes["i"] for s in receiver.spans()} == set(range(5))
    exporter.shutdown()
    assert exporter.export(spans_of(1)) is SpanExportResult.FAILURE  # shut down


def test_a_batch_over_the_size_limit_is_dropped(
    receiver: OTLPReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = FastOTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces", max_request_size=64)
    with caplog.at_level(logging.WARNING):
        assert exporter.export(spans_of(5)) is SpanExportResult.FAILURE
    assert "exceeds max_request_size" in caplog.text
    assert exporter.export(spans_of(1)[:0]) is SpanExportResult.SUCCESS  # an empty batch fits
    exporter.shutdown()


def test_an_unreachable_collector_is_a_failed_export() -> None:
    exporter = FastOTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces", timeout=0.5)
    assert exporter.export(spans_of(1)) is SpanExportResult.FAILURE
    exporter.shutdown()
