"""The options of :func:`configure_telemetry` and how the standard ``OTEL_*`` variables resolve them.

Resolution is a pure function of the options and an environment mapping (:func:`resolve`), so the rules
— an explicit argument wins over a variable, a variable over the default — are tested without touching
``os.environ``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Protocol = Literal["http/protobuf", "grpc"]
IdentityLabel = Literal["tenant", "api_key", "user"]
Signal = Literal["traces", "metrics", "logs"]

DEFAULT_SERVICE_NAME = "llmproxy"
_TRUE = frozenset({"true", "1", "yes", "on"})


class CardinalityOptions(BaseModel):
    """How many label values a metric may carry.

    - ``identity_labels``: which of tenant, API key and user become metric labels (none by default: each is
      a series per customer). Spans always carry them.
    - ``max_values``: per metric and label, at most this many distinct values; later ones are ``other``
      and counted in ``llmproxy.telemetry.cardinality_overflow``.
    - ``known_models``: when set, a request model outside it is ``other`` at once (clients choose the
      model string, so it is client-controlled cardinality).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_values: int = Field(default=1000, ge=1, le=1_000_000)
    identity_labels: frozenset[IdentityLabel] = frozenset()
    known_models: frozenset[str] | None = None


class TelemetryOptions(BaseModel):
    """Everything :func:`configure_telemetry` takes that is plain data (validated, frozen)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service_name: str | None = None
    service_version: str | None = None
    environment: str | None = None
    resource_attributes: Mapping[str, str | int | float | bool] = Field(default_factory=dict)
    #: OTLP base URL (``http://collector:4318`` for HTTP, ``http://collector:4317`` for gRPC).
    otlp_endpoint: str | None = None
    protocol: Protocol | None = None
    otlp_headers: Mapping[str, str] | None = None
    #: OTLP export on/off; None = on when an endpoint is configured (argument or ``OTEL_*`` variable).
    export: bool | None = None
    traces: bool = True
    metrics: bool = True
    logs: bool = True
    prometheus: bool = False
    #: Seconds between metric exports (None: ``OTEL_METRIC_EXPORT_INTERVAL`` or the SDK's 60 s).
    metric_export_interval: float | None = Field(default=None, gt=0, le=86_400)
    cardinality: CardinalityOptions = Field(default_factory=CardinalityOptions)
    #: None = ``OTEL_SDK_DISABLED``.
    disabled: bool | None = None

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint_is_a_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("otlp_endpoint must start with http:// or https://")
        return value

    @field_validator("service_name", "service_version", "environment")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be blank")
        return value


@dataclass(frozen=True, slots=True)
class Plan:
    """What to build, once the options and the environment are reconciled."""

    disabled: bool
    resource_attributes: Mapping[str, str | int | float | bool]
    protocol: Protocol
    #: Per signal: the OTLP endpoint to export to (None = the exporter's own env/default resolution),
    #: present only for the signals that export over OTLP.
    otlp: Mapping[Signal, str | None]
    traces: bool
    metrics: bool
    logs: bool
    prometheus: bool


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in _TRUE


def _exporters(environ: Mapping[str, str], signal: Signal) -> set[str]:
    raw = environ.get(f"OTEL_{signal.upper()}_EXPORTER", "")
    return {part.strip().lower() for part in raw.split(",") if part.strip()}


def _protocol(options: TelemetryOptions, environ: Mapping[str, str]) -> Protocol:
    if options.protocol is not None:
        return options.protocol
    raw = environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf").strip().lower() or "http/protobuf"
    if raw == "grpc":
        return "grpc"
    if raw == "http/protobuf":
        return "http/protobuf"
    raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL: {raw!r} is not supported (use http/protobuf or grpc)")


_PATHS: Mapping[Signal, str] = {"traces": "v1/traces", "metrics": "v1/metrics", "logs": "v1/logs"}


def resolve(options: TelemetryOptions, environ: Mapping[str, str]) -> Plan:
    """Reconcile ``options`` with the ``OTEL_*`` variables of ``environ``."""
    disabled = options.disabled if options.disabled is not None else _flag(environ, "OTEL_SDK_DISABLED")
    attributes: dict[str, str | int | float | bool] = dict(options.resource_attributes)
    for key, value in (
        ("service.name", options.service_name),
        ("service.version", options.service_version),
        ("deployment.environment.name", options.environment),
    ):
        if value is not None:
            attributes[key] = value
    protocol = _protocol(options, environ)
    enabled: dict[Signal, bool] = {"traces": options.traces, "metrics": options.metrics, "logs": options.logs}
    otlp: dict[Signal, str | None] = {}
    for signal, wanted in enabled.items():
        chosen = _exporters(environ, signal)
        if not wanted or "none" in chosen:
            continue
        configured = bool(
            options.otlp_endpoint
            or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
            or "otlp" in chosen
        )
        if not (options.export if options.export is not None else configured):
            continue
        endpoint = options.otlp_endpoint
        if endpoint is not None and protocol == "http/protobuf":
            endpoint = f"{endpoint.rstrip('/')}/{_PATHS[signal]}"
        otlp[signal] = endpoint
    prometheus = options.metrics and (options.prometheus or "prometheus" in _exporters(environ, "metrics"))
    return Plan(
        disabled=disabled,
        resource_attributes=attributes,
        protocol=protocol,
        otlp=otlp,
        traces=options.traces,
        metrics=options.metrics,
        logs=options.logs,
        prometheus=prometheus,
    )
