"""OTLP exporters for each signal, over HTTP (default) or gRPC (the ``[grpc]`` extra), made fork-safe.

Fork safety, and what the SDK already does: since 1.44 the SDK registers ``os.register_at_fork`` hooks that,
in a forked child, restart the ``BatchSpanProcessor`` / ``BatchLogRecordProcessor`` worker threads (with
the parent's queued records dropped, so nothing is exported twice), restart the
``PeriodicExportingMetricReader`` thread, and give the child a new ``service.instance.id``. What it does not
do is the exporters' HTTP connections: each OTLP/HTTP exporter holds a ``requests.Session`` whose pooled
keep-alive sockets the child inherits — parent and child writing to one TCP connection corrupt each other's
requests. So the sessions are ours, and a forked child closes them (``Session.close()`` drops the pools; the
next export opens a connection of the child's own). Closing a socket in the child sends nothing to the peer:
the parent's descriptor keeps the connection open.

Spans over OTLP/HTTP go through :class:`~._otlp_exporter.FastOTLPSpanExporter`: the SDK's exporter with a
cheaper encoder (the same bytes).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import requests
    from opentelemetry.sdk._logs.export import LogRecordExporter
    from opentelemetry.sdk.metrics.export import MetricExporter
    from opentelemetry.sdk.trace.export import SpanExporter

    from ._options import Protocol

_sessions: weakref.WeakSet[requests.Session] = weakref.WeakSet()


def _close_sessions_in_child() -> None:
    for session in list(_sessions):
        session.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_sessions_in_child)


def _session() -> requests.Session:
    import requests

    session = requests.Session()
    _sessions.add(session)
    return session


_GRPC_MISSING = (
    "OTLP over gRPC needs the grpc extra: pip install 'llmproxy-observability[grpc]' "
    "(or use protocol='http/protobuf')"
)


def span_exporter(
    protocol: Protocol, endpoint: str | None, headers: Mapping[str, str] | None
) -> SpanExporter:
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ImportError(_GRPC_MISSING) from exc
        return Grpc(endpoint=endpoint, headers=dict(headers) if headers else None)
    from ._otlp_exporter import FastOTLPSpanExporter

    return FastOTLPSpanExporter(endpoint=endpoint, headers=headers, session=_session())


def metric_exporter(
    protocol: Protocol, endpoint: str | None, headers: Mapping[str, str] | None
) -> MetricExporter:
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ImportError(_GRPC_MISSING) from exc
        return Grpc(endpoint=endpoint, headers=dict(headers) if headers else None)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(endpoint=endpoint, headers=headers, session=_session())


def log_exporter(
    protocol: Protocol, endpoint: str | None, headers: Mapping[str, str] | None
) -> LogRecordExporter:
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as Grpc
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ImportError(_GRPC_MISSING) from exc
        return Grpc(endpoint=endpoint, headers=dict(headers) if headers else None)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return OTLPLogExporter(endpoint=endpoint, headers=headers, session=_session())
