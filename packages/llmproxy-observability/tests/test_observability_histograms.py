"""The histogram handle cache records what the SDK's public record would, and steps aside when it can't."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    MeterProvider,
)
from opentelemetry.sdk.metrics import (
    Histogram as SDKHistogramKind,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader, MetricReader
from opentelemetry.sdk.metrics.view import View

from llmproxy.observability._histograms import Histogram

BUCKETS = (0.01, 0.1, 1.0)
Points = dict[tuple[tuple[str, str, Any], ...], tuple[int, float, float, float, tuple[int, ...], int]]


def key(**attributes: Any) -> tuple[tuple[str, str, Any], ...]:
    """A point's attribute set with each value's type (1 and True are two sets to the SDK)."""
    return tuple(sorted((name, type(value).__name__, value) for name, value in attributes.items()))


def points(reader: InMemoryMetricReader) -> Points:
    """Per attribute set: count, sum, min, max, bucket counts and how many exemplars."""
    found: Points = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:  # type: ignore[union-attr]
                    found[key(**point.attributes)] = (
                        point.count,  # type: ignore[union-attr]
                        point.sum,  # type: ignore[union-attr]
                        point.min,  # type: ignore[union-attr]
                        point.max,  # type: ignore[union-attr]
                        tuple(point.bucket_counts),  # type: ignore[union-attr]
                        len(point.exemplars),
                    )
    return found


def histogram_on(reader: MetricReader, **provider: Any) -> tuple[Histogram, MeterProvider]:
    provider.setdefault("exemplar_filter", AlwaysOffExemplarFilter())
    meter_provider = MeterProvider(metric_readers=[reader], **provider)
    raw = meter_provider.get_meter("test").create_histogram(
        "h", unit="s", explicit_bucket_boundaries_advisory=BUCKETS
    )
    return Histogram(raw), meter_provider


SETS = [{"a": "x", "b": 1}, {"a": "y", "b": 1}, {"a": "x", "b": True}, {"b": 1, "a": "x"}]
VALUES = [0.005, 0.05, 0.5, 5.0, 0.0, 0.05]


def record_all(record: Callable[[float, dict[str, Any]], None]) -> None:
    for value in VALUES:
        for attributes in SETS:
            record(value, attributes)


def test_the_cached_path_exports_what_the_public_record_does() -> None:
    ours_reader, public_reader = InMemoryMetricReader(), InMemoryMetricReader()
    ours, ours_provider = histogram_on(ours_reader)
    public, public_provider = histogram_on(public_reader)
    assert ours.direct
    record_all(ours.record)
    record_all(public.histogram.record)
    assert points(ours_reader) == points(public_reader)
    # b=1 and b=True stay two series (the SDK tells them apart), and key order does not make a third
    assert len(points(ours_reader)) == 3
    ours_provider.shutdown()
    public_provider.shutdown()


def test_on_the_installed_sdk_known_sets_update_the_aggregations_in_place() -> None:
    """The SDK's explicit-bucket aggregate reads what ``_update`` was written against (else the handles call
    ``aggregate``, still correct, but this fails so that an SDK change is looked at)."""
    reader = InMemoryMetricReader()
    ours, provider = histogram_on(reader)
    ours.record(0.05, {"a": "x"})
    ours.record_many([0.5, 5.0], {"a": "y"})
    assert [kept[2] for kept in ours._handles.values()] == [True, True]
    assert points(reader)[key(a="y")][:4] == (2, 5.5, 0.5, 5.0)
    provider.shutdown()


def test_without_the_in_place_update_the_handles_export_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """The path an SDK whose aggregate changed would take: handles calling the SDK's ``aggregate``."""
    from llmproxy.observability import _histograms

    monkeypatch.setattr(_histograms, "_UPDATABLE", None)
    ours_reader, public_reader = InMemoryMetricReader(), InMemoryMetricReader()
    ours, ours_provider = histogram_on(ours_reader)
    public, public_provider = histogram_on(public_reader)
    record_all(ours.record)
    for attributes in SETS:
        ours.record_many([0.005, 0.5, 5.0], attributes)
    record_all(public.histogram.record)
    for attributes in SETS:
        for value in (0.005, 0.5, 5.0):
            public.histogram.record(value, attributes)
    assert points(ours_reader) == points(public_reader)
    assert {kept[2] for kept in ours._handles.values()} == {False}
    ours_provider.shutdown()
    public_provider.shutdown()


def test_measurements_after_a_collection_keep_accumulating() -> None:
    reader = InMemoryMetricReader()
    ours, provider = histogram_on(reader)
    ours.record(0.05, {"a": "x"})
    ours.record(0.05, {"a": "x"})
    assert points(reader)[key(a="x")][0] == 2
    ours.record(0.5, {"a": "x"})
    assert points(reader)[key(a="x")][:2] == (3, 0.6)
    provider.shutdown()


def test_two_readers_both_get_every_measurement() -> None:
    first, second = InMemoryMetricReader(), InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[first, second], exemplar_filter=AlwaysOffExemplarFilter())
    ours = Histogram(
        provider.get_meter("test").create_histogram("h", explicit_bucket_boundaries_advisory=BUCKETS)
    )
    for _ in range(3):
        ours.record(0.05, {"a": "x"})
    assert points(first) == points(second)
    assert points(first)[key(a="x")][0] == 3
    provider.shutdown()


def test_a_view_keeping_some_attributes_is_honoured() -> None:
    reader = InMemoryMetricReader()
    ours, provider = histogram_on(reader, views=[View(instrument_name="h", attribute_keys={"a"})])
    for b in range(3):
        ours.record(0.05, {"a": "x", "b": b})
        ours.record(0.05, {"a": "x", "b": b})
    assert points(reader) == {key(a="x"): (6, pytest.approx(0.3), 0.05, 0.05, (0, 6, 0, 0), 0)}
    provider.shutdown()


def test_delta_temporality_uses_the_public_record() -> None:
    reader = InMemoryMetricReader(preferred_temporality={SDKHistogramKind: AggregationTemporality.DELTA})
    ours, provider = histogram_on(reader)
    ours.record(0.05, {"a": "x"})
    assert not ours.direct
    ours.record(0.05, {"a": "x"})
    assert points(reader)[key(a="x")][0] == 2
    ours.record(0.5, {"a": "x"})  # the previous collection dropped the SDK's aggregation: not lost here
    assert points(reader)[key(a="x")][:2] == (1, 0.5)
    provider.shutdown()


def test_exemplars_on_use_the_public_record() -> None:
    reader = InMemoryMetricReader()
    ours, provider = histogram_on(reader, exemplar_filter=AlwaysOnExemplarFilter())
    assert not ours.direct
    ours.record(0.05, {"a": "x"})
    ours.record(0.05, {"a": "x"})
    assert points(reader)[key(a="x")][5] >= 1
    provider.shutdown()


def test_past_the_sdk_cardinality_limit_the_overflow_point_counts_them() -> None:
    reader = InMemoryMetricReader(cardinality_limits={SDKHistogramKind: 2})
    ours, provider = histogram_on(reader)
    public_reader = InMemoryMetricReader(cardinality_limits={SDKHistogramKind: 2})
    public, public_provider = histogram_on(public_reader)
    for record in (ours.record, public.histogram.record):
        for _ in range(2):
            for name in "abcd":
                record(0.05, {"a": name})
    assert points(reader) == points(public_reader)
    assert key(**{"otel.metric.overflow": True}) in points(reader)
    provider.shutdown()
    public_provider.shutdown()


def test_odd_amounts_and_unhashable_values_take_the_public_record() -> None:
    reader = InMemoryMetricReader()
    ours, provider = histogram_on(reader)
    ours.record(0.05, {"a": "x"})
    ours.record(float("nan"), {"a": "x"})  # the SDK drops it (with a warning)
    ours.record(-1.0, {"a": "x"})
    ours.record(0.05, {"a": ["list", "value"]})
    ours.record(0.05, {"a": ["list", "value"]})
    found = points(reader)
    assert found[key(a="x")][0] == 1
    assert found[key(a=("list", "value"))][0] == 2
    provider.shutdown()


def test_a_reader_added_or_removed_later_drops_the_handles() -> None:
    first, second = InMemoryMetricReader(), InMemoryMetricReader()
    ours, provider = histogram_on(first)
    for _ in range(2):
        ours.record(0.05, {"a": "x"})
    provider.add_metric_reader(second)
    for _ in range(2):
        ours.record(0.05, {"a": "x"})
    assert points(first)[key(a="x")][0] == 4
    assert points(second)[key(a="x")][0] == 2
    provider.remove_metric_reader(first)
    ours.record(0.05, {"a": "x"})
    ours.record(0.05, {"a": "x"})
    assert points(second)[key(a="x")][0] == 4
    provider.shutdown()


def test_record_many_exports_what_one_public_record_each_does() -> None:
    ours_reader, public_reader = InMemoryMetricReader(), InMemoryMetricReader()
    ours, ours_provider = histogram_on(ours_reader)
    public, public_provider = histogram_on(public_reader)
    lots = [[], [0.05], [0.005, 0.5, 5.0, 0.0], [float("nan"), -1.0, 0.05]]  # NaN and negatives: the SDK's
    for attributes in SETS:
        for lot in lots:
            ours.record_many(lot, attributes)
            for value in lot:
                public.histogram.record(value, attributes)
    assert points(ours_reader) == points(public_reader)
    ours_provider.shutdown()
    public_provider.shutdown()
