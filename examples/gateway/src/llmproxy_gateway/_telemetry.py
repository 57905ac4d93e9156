"""Observability, outermost: traces, metrics and logs of every request (llmproxy-observability).

``LLMPROXY_OTLP_ENDPOINT`` (or the standard ``OTEL_EXPORTER_OTLP_*`` variables) turns OTLP export on. Without
one — the embedded demo — nothing is exported and ``/metrics`` serves the Prometheus exposition instead
(``LLMPROXY_PROMETHEUS`` forces it on or off either way).
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any

from fastapi import FastAPI

from llmproxy.core import ASGIApp
from llmproxy.observability import (
    Telemetry,
    TelemetryAlreadyConfigured,
    TelemetryMiddleware,
    configure_telemetry,
    get_telemetry,
)

from ._settings import GatewaySettings, TelemetrySettings
from ._version import __version__

logger = logging.getLogger("llmproxy_gateway")

_OTLP_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
)


def _exporting(settings: TelemetrySettings) -> bool:
    return bool(settings.otlp_endpoint or any(os.environ.get(name) for name in _OTLP_VARIABLES))


def configure(settings: TelemetrySettings | None = None) -> Telemetry:
    """The process's telemetry, configured once (later calls return the same handle)."""
    settings = settings or TelemetrySettings()
    prometheus = settings.prometheus if settings.prometheus is not None else not _exporting(settings)
    try:
        return configure_telemetry(
            service_name="llmproxy-gateway",
            service_version=__version__,
            environment=settings.environment,
            otlp_endpoint=settings.otlp_endpoint,
            protocol=settings.otlp_protocol,
            prometheus=prometheus,
            disabled=None if settings.telemetry else True,
        )
    except TelemetryAlreadyConfigured:
        # Several apps built in one process (tests) share the first configuration.
        existing = get_telemetry()
        assert existing is not None
        logger.warning("telemetry already configured for this process: keeping the first configuration")
        return existing


def fastapi_native_telemetry_off() -> dict[str, Any]:
    """``FastAPI(**...)`` arguments that switch FastAPI's own OpenTelemetry instrumentation off.

    FastAPI 0.16x traces and measures every request itself as soon as a global tracer provider exists —
    which ``configure_telemetry`` sets. Its SERVER span extracts ``traceparent`` from the headers instead of
    joining the current span, so each request would show two sibling SERVER spans (and the upstream call
    would hang under FastAPI's), and ``http.server.request.duration`` would be recorded twice. The gateway's
    telemetry is llmproxy-observability's, outermost; older FastAPI versions have no such argument.
    """
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def with_telemetry(app: ASGIApp, settings: GatewaySettings, telemetry: Telemetry | None = None) -> ASGIApp:
    """Wrap the whole gateway (outermost): a SERVER span and the standard metrics per request."""
    options = settings.observability
    telemetry = telemetry or configure(options)
    return TelemetryMiddleware(
        app,
        telemetry=telemetry,
        provider_name="openai" if settings.provider == "openai" else "llmproxy.mock",
        metrics_path=options.metrics_path,
    )
