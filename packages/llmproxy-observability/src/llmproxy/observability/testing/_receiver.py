"""A local OTLP/HTTP receiver in a thread, for tests: traces, metrics and logs decoded from protobuf."""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind) if kind else None


def _attributes(pairs: Sequence[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    status_code: int
    events: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReceivedMetric:
    name: str
    unit: str
    kind: str
    resource: dict[str, Any]
    #: Each data point's attributes and its value (a number, or for a histogram a dict with
    #: ``count``, ``sum``, ``bounds`` and ``counts``).
    points: list[tuple[dict[str, Any], Any]]


@dataclass(frozen=True)
class ReceivedLog:
    body: Any
    severity: str
    trace_id: str
    span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]


def _points(metric: Any) -> tuple[str, list[tuple[dict[str, Any], Any]]]:
    kind = metric.WhichOneof("data")
    data = getattr(metric, kind)
    points: list[tuple[dict[str, Any], Any]] = []
    for point in data.data_points:
        attributes = _attributes(point.attributes)
        if kind == "histogram":
            value: Any = {
                "count": point.count,
                "sum": point.sum,
                "bounds": list(point.explicit_bounds),
                "counts": list(point.bucket_counts),
            }
        else:
            value = point.as_double if point.WhichOneof("value") == "as_double" else point.as_int
        points.append((attributes, value))
    return kind, points


class OTLPReceiver:
    """``with OTLPReceiver() as receiver:`` then export to ``receiver.endpoint`` (OTLP/HTTP protobuf)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._spans: list[ReceivedSpan] = []
        self._metrics: list[ReceivedMetric] = []
        self._logs: list[ReceivedLog] = []
        self.requests = 0
        self._local = threading.local()  # the handler thread's client port, until its request is added
        #: The client port of each export request, in order (one port per connection).
        self.client_ports: list[int] = []
        #: The span names of each export request, in the same order (empty for metrics and logs).
        self.batches: list[set[str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, like a real collector: exporters reuse their connections between exports.
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                receiver._connection(self.client_address[1])
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                encoding = (self.headers.get("content-encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                reply = receiver._receive(self.path, body)
                if reply is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> OTLPReceiver:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _receive(self, path: str, body: bytes) -> bytes | None:
        if path.endswith("/v1/traces"):
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            spans = [
                ReceivedSpan(
                    name=span.name,
                    kind=span.kind,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    attributes=_attributes(span.attributes),
                    resource=_attributes(resource_spans.resource.attributes),
                    scope=scope_spans.scope.name,
                    status_code=span.status.code,
                    events=[event.name for event in span.events],
                )
                for resource_spans in request.resource_spans
                for scope_spans in resource_spans.scope_spans
                for span in scope_spans.spans
            ]
            self._add(self._spans, spans, {span.name for span in spans})
            reply: bytes = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            return reply
        if path.endswith("/v1/metrics"):
            request_m = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
            metrics = []
            for resource_metrics in request_m.resource_metrics:
                resource = _attributes(resource_metrics.resource.attributes)
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        kind, points = _points(metric)
                        metrics.append(ReceivedMetric(metric.name, metric.unit, kind, resource, points))
            self._add(self._metrics, metrics)
            reply_m: bytes = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
            return reply_m
        if path.endswith("/v1/logs"):
            request_l = logs_service_pb2.ExportLogsServiceRequest.FromString(body)
            logs = [
                ReceivedLog(
                    body=_value(record.body),
                    severity=record.severity_text,
                    trace_id=record.trace_id.hex(),
                    span_id=record.span_id.hex(),
                    attributes=_attributes(record.attributes),
                    resource=_attributes(resource_logs.resource.attributes),
                )
                for resource_logs in request_l.resource_logs
                for scope_logs in resource_logs.scope_logs
                for record in scope_logs.log_records
            ]
            self._add(self._logs, logs)
            reply_l: bytes = logs_service_pb2.ExportLogsServiceResponse().SerializeToString()
            return reply_l
        return None

    def _connection(self, port: int) -> None:
        self._local.port = port

    def _add(self, target: list[Any], items: list[Any], names: set[str] | None = None) -> None:
        with self._changed:
            self.client_ports.append(self._local.port)
            self.batches.append(names or set())
            target.extend(items)
            self.requests += 1
            self._changed.notify_all()

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def metrics(self) -> list[ReceivedMetric]:
        with self._lock:
            return list(self._metrics)

    def logs(self) -> list[ReceivedLog]:
        with self._lock:
            return list(self._logs)

    def metric(self, name: str) -> Iterator[ReceivedMetric]:
        return (metric for metric in self.metrics() if metric.name == name)

    def wait_for(self, condition: Callable[[OTLPReceiver], bool], timeout: float = 10.0) -> bool:
        """Wait until ``condition(receiver)`` holds (re-checked on every export received) or time runs out."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                self._lock.release()
                try:
                    if condition(self):
                        return True
                finally:
                    self._lock.acquire()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
