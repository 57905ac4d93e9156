"""``configure_telemetry(...)``: traces, metrics and logs in one call, and the :class:`Telemetry` handle."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api

from ._instruments import Instruments, LlmProxyMetrics
from ._logging import install_trace_context
from ._options import DEFAULT_SERVICE_NAME, CardinalityOptions, Plan, Protocol, TelemetryOptions, resolve
from ._semconv import SCOPE_NAME
from ._version import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import LogRecordExporter
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.sampling import Sampler
    from prometheus_client import CollectorRegistry

    from llmproxy.core import ASGIApp, WSGIApp

logger = logging.getLogger("llmproxy.observability")


class TelemetryAlreadyConfigured(RuntimeError):
    """``configure_telemetry`` was called again, for the process-wide providers, with other options."""


class Telemetry:
    """The configured providers, this package's tracer, meter and instruments, and their life cycle.

    ``enabled`` is False under ``OTEL_SDK_DISABLED=true``: the tracer and meter are then OpenTelemetry's
    no-op ones and the middlewares pass requests straight through.
    """

    def __init__(
        self,
        *,
        options: TelemetryOptions,
        plan: Plan,
        tracer_provider: trace_api.TracerProvider,
        meter_provider: metrics_api.MeterProvider,
        logger_provider: Any = None,
        owned: Sequence[Any] = (),
        prometheus_registry: CollectorRegistry | None = None,
        log_handler: logging.Handler | None = None,
    ) -> None:
        self.options = options
        self.plan = plan
        self.enabled = not plan.disabled
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.logger_provider = logger_provider
        self.prometheus_registry = prometheus_registry
        self.tracer = tracer_provider.get_tracer(SCOPE_NAME, __version__)
        self.meter = meter_provider.get_meter(SCOPE_NAME, __version__)
        self.instruments = Instruments(self.meter, options.cardinality)
        self._owned = tuple(owned)
        self._log_handler = log_handler
        self._shutdown = False

    @property
    def metrics(self) -> LlmProxyMetrics:
        """The seed's business instruments (``record_request(...)``)."""
        return self.instruments.llmproxy

    @property
    def prometheus(self) -> bool:
        return self.prometheus_registry is not None

    def prometheus_text(self) -> bytes:
        """The Prometheus text exposition of every metric (empty when Prometheus is off)."""
        if self.prometheus_registry is None:
            return b""
        from prometheus_client import generate_latest

        return generate_latest(self.prometheus_registry)

    def metrics_app(self) -> ASGIApp:
        """An ASGI app answering the Prometheus exposition (404 when Prometheus is off)."""
        from ._prometheus import metrics_asgi_app

        return metrics_asgi_app(self)

    def metrics_wsgi_app(self) -> WSGIApp:
        """The WSGI twin of :meth:`metrics_app`."""
        from ._prometheus import metrics_wsgi_app

        return metrics_wsgi_app(self)

    def force_flush(self, timeout_millis: int = 10_000) -> bool:
        """Export everything recorded so far, now (the batch processors and metric readers)."""
        done = True
        for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
            flush = getattr(provider, "force_flush", None)
            if flush is not None:
                done = bool(flush(timeout_millis)) and done
        return done

    def shutdown(self) -> None:
        """Flush and stop what this handle created (injected providers are flushed, not shut down)."""
        if self._shutdown:
            return
        self._shutdown = True
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
        self.force_flush()
        for provider in self._owned:
            try:
                provider.shutdown()
            except Exception:  # never let telemetry's shutdown break the app's
                logger.exception("telemetry: shutting down %s failed", type(provider).__name__)
        global _global, _global_key
        with _global_lock:
            if _global is self:
                _global, _global_key = None, None


_global_lock = threading.Lock()
_global: Telemetry | None = None
_global_key: tuple[Any, ...] | None = None


def get_telemetry() -> Telemetry | None:
    """The process-wide :class:`Telemetry` configured with ``set_global=True``, if any."""
    return _global


def configure_telemetry(
    *,
    service_name: str | None = None,
    service_version: str | None = None,
    environment: str | None = None,
    otlp_endpoint: str | None = None,
    protocol: Protocol | None = None,
    headers: Mapping[str, str] | None = None,
    export: bool | None = None,
    traces: bool = True,
    metrics: bool = True,
    logs: bool = True,
    prometheus: bool = False,
    resource_attributes: Mapping[str, str | int | float | bool] | None = None,
    metric_export_interval: float | None = None,
    cardinality: CardinalityOptions | None = None,
    disabled: bool | None = None,
    sampler: Sampler | None = None,
    span_exporters: Sequence[SpanExporter] = (),
    metric_readers: Sequence[MetricReader] = (),
    log_exporters: Sequence[LogRecordExporter] = (),
    tracer_provider: trace_api.TracerProvider | None = None,
    meter_provider: metrics_api.MeterProvider | None = None,
    set_global: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Telemetry:
    """Configure traces, metrics and logs in one call; returns the :class:`Telemetry` handle.

    The standard ``OTEL_*`` variables fill in what the arguments leave unset (see the package README for
    each). ``span_exporters`` / ``metric_readers`` / ``log_exporters`` add to what is built (tests pass the
    SDK's in-memory ones); ``tracer_provider`` / ``meter_provider`` replace it. With ``set_global`` (the
    default) the providers become OpenTelemetry's process-wide ones, once: calling again with the same
    arguments returns the same handle, with other arguments raises :class:`TelemetryAlreadyConfigured`.
    """
    options = TelemetryOptions(
        service_name=service_name,
        service_version=service_version,
        environment=environment,
        resource_attributes=dict(resource_attributes or {}),
        otlp_endpoint=otlp_endpoint,
        protocol=protocol,
        otlp_headers=dict(headers) if headers is not None else None,
        export=export,
        traces=traces,
        metrics=metrics,
        logs=logs,
        prometheus=prometheus,
        metric_export_interval=metric_export_interval,
        cardinality=cardinality or CardinalityOptions(),
        disabled=disabled,
    )
    injected = (sampler, *span_exporters, *metric_readers, *log_exporters, tracer_provider, meter_provider)
    key = (options, tuple(id(item) for item in injected))
    global _global, _global_key
    with _global_lock:
        if set_global and _global is not None:
            if _global_key == key:
                return _global
            raise TelemetryAlreadyConfigured(
                "telemetry is already configured for this process with other options; "
                "call shutdown() on the first handle, or pass set_global=False for a private one"
            )
        plan = resolve(options, os.environ if environ is None else environ)
        telemetry = _build(
            options,
            plan,
            sampler=sampler,
            span_exporters=span_exporters,
            metric_readers=metric_readers,
            log_exporters=log_exporters,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            set_global=set_global,
            environ=os.environ if environ is None else environ,
        )
        if set_global:
            _global, _global_key = telemetry, key
    return telemetry


def _resource(plan: Plan, environ: Mapping[str, str]) -> Resource:
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource

    resource = Resource.create(dict(plan.resource_attributes))
    # Arguments are the application's defaults; the operator's OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES
    # name the deployment, so they are applied on top (Resource.create alone lets arguments win).
    if environ is os.environ:
        resource = resource.merge(OTELResourceDetector().detect())
    else:
        resource = resource.merge(_env_resource(environ))
    name = str(resource.attributes.get("service.name", ""))
    if not name or name.startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": DEFAULT_SERVICE_NAME}))
    return resource


def _env_resource(environ: Mapping[str, str]) -> Resource:
    from urllib.parse import unquote

    from opentelemetry.sdk.resources import Resource

    attributes: dict[str, str] = {}
    for item in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            attributes[key.strip()] = unquote(value.strip())
    if environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = environ["OTEL_SERVICE_NAME"]
    return Resource(attributes)


def _disabled(options: TelemetryOptions, plan: Plan) -> Telemetry:
    return Telemetry(
        options=options,
        plan=plan,
        tracer_provider=trace_api.NoOpTracerProvider(),
        meter_provider=metrics_api.NoOpMeterProvider(),
    )


def _build(
    options: TelemetryOptions,
    plan: Plan,
    *,
    sampler: Sampler | None,
    span_exporters: Sequence[SpanExporter],
    metric_readers: Sequence[MetricReader],
    log_exporters: Sequence[LogRecordExporter],
    tracer_provider: trace_api.TracerProvider | None,
    meter_provider: metrics_api.MeterProvider | None,
    set_global: bool,
    environ: Mapping[str, str],
) -> Telemetry:
    if plan.disabled:
        return _disabled(options, plan)
    from . import _exporters

    resource = _resource(plan, environ)
    headers = options.otlp_headers
    owned: list[Any] = []

    if tracer_provider is None:
        tracer_provider = trace_api.NoOpTracerProvider()
        if plan.traces:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            sdk_tracer_provider = TracerProvider(resource=resource, sampler=sampler)
            exporters = list(span_exporters)
            if "traces" in plan.otlp:
                exporters.append(_exporters.span_exporter(plan.protocol, plan.otlp["traces"], headers))
            for exporter in exporters:
                sdk_tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
            tracer_provider = sdk_tracer_provider
            owned.append(tracer_provider)

    registry: CollectorRegistry | None = None
    if meter_provider is None:
        meter_provider = metrics_api.NoOpMeterProvider()
        if plan.metrics:
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            readers = list(metric_readers)
            if "metrics" in plan.otlp:
                interval = options.metric_export_interval
                readers.append(
                    PeriodicExportingMetricReader(
                        _exporters.metric_exporter(plan.protocol, plan.otlp["metrics"], headers),
                        export_interval_millis=interval * 1000 if interval is not None else None,
                    )
                )
            if plan.prometheus:
                registry, reader = _prometheus_reader()
                readers.append(reader)
            meter_provider = MeterProvider(
                resource=resource, metric_readers=readers, exemplar_filter=_exemplar_filter(environ)
            )
            owned.append(meter_provider)

    logger_provider: LoggerProvider | None = None
    handler: logging.Handler | None = None
    if plan.logs:
        install_trace_context()
        exporters_ = list(log_exporters)
        if "logs" in plan.otlp:
            exporters_.append(_exporters.log_exporter(plan.protocol, plan.otlp["logs"], headers))
        if exporters_:
            from opentelemetry.instrumentation.logging.handler import LoggingHandler
            from opentelemetry.sdk._logs import LoggerProvider
            from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

            logger_provider = LoggerProvider(resource=resource)
            for log_exporter in exporters_:
                logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
            owned.append(logger_provider)
            handler = LoggingHandler(logger_provider=logger_provider)
            logging.getLogger().addHandler(handler)

    if set_global:
        trace_api.set_tracer_provider(tracer_provider)
        metrics_api.set_meter_provider(meter_provider)
        if logger_provider is not None:
            from opentelemetry._logs import set_logger_provider

            set_logger_provider(logger_provider)
    return Telemetry(
        options=options,
        plan=plan,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
        owned=owned,
        prometheus_registry=registry,
        log_handler=handler,
    )


def _exemplar_filter(environ: Mapping[str, str]) -> Any:
    """Exemplars off unless ``OTEL_METRICS_EXEMPLAR_FILTER`` asks for them.

    The SDK's default (``trace_based``) offers every measurement made inside a sampled span to an exemplar
    reservoir: ~14 us per request over the middleware's histograms (bench_observability, one reader), a
    sixth of the request-path budget, for data the Prometheus exposition does not even carry.
    """
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter

    if environ.get("OTEL_METRICS_EXEMPLAR_FILTER"):
        return None  # the SDK reads the variable itself
    return AlwaysOffExemplarFilter()


def _prometheus_reader() -> tuple[CollectorRegistry, MetricReader]:
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise ImportError(
            "the Prometheus endpoint needs the prometheus extra: "
            "pip install 'llmproxy-observability[prometheus]'"
        ) from exc
    # A registry per Telemetry (not prometheus_client's global one): /metrics shows exactly this handle's
    # metrics, and two handles in one process (tests) do not clash.
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry, scope_info_enabled=False)
    return registry, reader
