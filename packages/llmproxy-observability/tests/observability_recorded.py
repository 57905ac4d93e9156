"""A private Telemetry on the SDK's in-memory span exporter, metric reader and log exporter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, Metric
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmproxy.observability import Telemetry, configure_telemetry


@dataclass
class Recorded:
    """A Telemetry and what it recorded."""

    telemetry: Telemetry
    spans_exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    logs_exporter: InMemoryLogRecordExporter

    def spans(self) -> list[ReadableSpan]:
        self.telemetry.force_flush()
        return list(self.spans_exporter.get_finished_spans())

    def metrics(self) -> dict[str, Metric]:
        data = self.reader.get_metrics_data()
        found: dict[str, Metric] = {}
        if data is None:
            return found
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    found[metric.name] = metric
        return found

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """``(attributes, value)`` per data point of metric ``name``; a histogram's value is its point."""
        metric = self.metrics().get(name)
        if metric is None:
            return []
        out: list[tuple[dict[str, Any], Any]] = []
        for point in metric.data.data_points:
            value = point if isinstance(point, HistogramDataPoint) else point.value  # type: ignore[union-attr]
            out.append((dict(point.attributes or {}), value))
        return out


def make_recorded(**kwargs: Any) -> Recorded:
    spans, reader, logs = InMemorySpanExporter(), InMemoryMetricReader(), InMemoryLogRecordExporter()
    kwargs.setdefault("environ", {})
    telemetry = configure_telemetry(
        span_exporters=[spans], metric_readers=[reader], log_exporters=[logs], set_global=False, **kwargs
    )
    return Recorded(telemetry, spans, reader, logs)
