"""configure_telemetry: resource, OTEL_* variables, validation, idempotence, OTEL_SDK_DISABLED."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from observability_apps import drive, http_scope, streaming_app
from observability_recorded import make_recorded
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError

from llmproxy.observability import TelemetryMiddleware, TelemetryOptions, configure_telemetry
from llmproxy.observability._options import resolve


def resource_of(**kwargs: object) -> dict[str, object]:
    rec = make_recorded(**kwargs)
    try:
        with rec.telemetry.tracer.start_as_current_span("probe"):
            pass
        [span] = rec.spans()
        return dict(span.resource.attributes)
    finally:
        rec.telemetry.shutdown()


def test_the_resource_names_service_version_and_environment() -> None:
    resource = resource_of(service_name="gw", service_version="2.0", environment="staging")
    assert (resource["service.name"], resource["service.version"]) == ("gw", "2.0")
    assert resource["deployment.environment.name"] == "staging"
    assert resource["service.instance.id"]


def test_without_a_name_the_service_is_llmproxy() -> None:
    assert resource_of()["service.name"] == "llmproxy"


def test_the_operators_variables_override_the_applications_arguments() -> None:
    environ = {
        "OTEL_SERVICE_NAME": "from-env",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=prod,team=llm%20ops",
    }
    resource = resource_of(service_name="from-code", environment="dev", environ=environ)
    assert resource["service.name"] == "from-env"
    assert resource["deployment.environment.name"] == "prod"
    assert resource["team"] == "llm ops"


def test_no_endpoint_means_no_otlp_export() -> None:
    plan = resolve(TelemetryOptions(), {})
    assert plan.otlp == {}


def test_an_endpoint_argument_exports_every_signal_to_its_path() -> None:
    plan = resolve(TelemetryOptions(otlp_endpoint="http://collector:4318/"), {})
    assert plan.protocol == "http/protobuf"
    assert plan.otlp == {
        "traces": "http://collector:4318/v1/traces",
        "metrics": "http://collector:4318/v1/metrics",
        "logs": "http://collector:4318/v1/logs",
    }


def test_the_standard_endpoint_variable_turns_export_on_and_leaves_urls_to_the_exporter() -> None:
    plan = resolve(TelemetryOptions(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert plan.otlp == {"traces": None, "metrics": None, "logs": None}


def test_a_signal_endpoint_variable_turns_on_that_signal_only() -> None:
    plan = resolve(TelemetryOptions(), {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert set(plan.otlp) == {"traces"}


def test_exporter_none_switches_a_signal_off() -> None:
    plan = resolve(
        TelemetryOptions(otlp_endpoint="http://c:4318"),
        {"OTEL_LOGS_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"},
    )
    assert set(plan.otlp) == {"traces"}


def test_grpc_comes_from_the_protocol_variable_and_keeps_the_base_endpoint() -> None:
    plan = resolve(TelemetryOptions(otlp_endpoint="http://c:4317"), {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert plan.protocol == "grpc"
    assert plan.otlp["traces"] == "http://c:4317"


def test_grpc_export_builds_the_grpc_exporters() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    from llmproxy.observability import _exporters

    assert isinstance(_exporters.span_exporter("grpc", "http://127.0.0.1:4317", None), OTLPSpanExporter)


def test_an_unknown_protocol_variable_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        resolve(TelemetryOptions(), {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


def test_prometheus_comes_from_the_argument_or_the_metrics_exporter_variable() -> None:
    assert resolve(TelemetryOptions(prometheus=True), {}).prometheus
    assert resolve(TelemetryOptions(), {"OTEL_METRICS_EXPORTER": "otlp,prometheus"}).prometheus
    assert not resolve(TelemetryOptions(prometheus=True, metrics=False), {}).prometheus


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("otlp_endpoint", "collector:4318"),
        ("protocol", "thrift"),
        ("metric_export_interval", 0),
        ("service_name", "  "),
    ],
)
def test_bad_options_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        configure_telemetry(set_global=False, environ={}, **{field: value})  # type: ignore[arg-type]
    assert field in str(caught.value)


async def test_sdk_disabled_makes_everything_a_no_op() -> None:
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    telemetry = configure_telemetry(
        span_exporters=[spans],
        metric_readers=[reader],
        set_global=False,
        environ={"OTEL_SDK_DISABLED": "true"},
    )
    assert not telemetry.enabled
    app = TelemetryMiddleware(streaming_app(3), telemetry=telemetry)
    sent = await drive(app, http_scope())
    assert next(m["type"] for m in sent) == "http.response.start"  # the app still answered
    telemetry.metrics.record_request("t", "m", "p", 1, 1, 0.1, True)
    with telemetry.tracer.start_as_current_span("x") as span:
        assert not span.is_recording()
    telemetry.force_flush()
    assert spans.get_finished_spans() == ()
    assert reader.get_metrics_data() is None  # the reader was never attached to a provider
    assert telemetry.prometheus_text() == b""
    telemetry.shutdown()


def run_python(code: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_configuring_twice_with_the_same_options_returns_the_same_global_handle() -> None:
    out = run_python(
        """
        import json
        from opentelemetry import trace, metrics
        from llmproxy.observability import configure_telemetry, get_telemetry, TelemetryAlreadyConfigured
        first = configure_telemetry(service_name="a", environ={})
        second = configure_telemetry(service_name="a", environ={})
        try:
            configure_telemetry(service_name="b", environ={})
            refused = False
        except TelemetryAlreadyConfigured:
            refused = True
        print(json.dumps({
            "same": first is second,
            "global": get_telemetry() is first,
            "tracer_provider": trace.get_tracer_provider() is first.tracer_provider,
            "meter_provider": metrics.get_meter_provider() is first.meter_provider,
            "refused": refused,
        }))
        first.shutdown()
        """
    )
    assert json.loads(out) == {
        "same": True,
        "global": True,
        "tracer_provider": True,
        "meter_provider": True,
        "refused": True,
    }


def test_the_package_does_not_import_sqlalchemy_or_alembic() -> None:
    out = run_python(
        """
        import sys
        import llmproxy.observability
        from llmproxy.observability import configure_telemetry
        configure_telemetry(set_global=False, environ={})
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("sqlalchemy", "alembic")))
        """
    )
    assert out.strip() == "[]"
