"""OpenTelemetry for llmproxy: one call sets up traces, metrics and logs; middleware traces every request."""

from ._annotate import add_event, annotate, request_span, span, traced
from ._asgi import ROUTE_KEY, TelemetryMiddleware, route_template
from ._cardinality import BoundedValues
from ._client import GenAIClientCall, genai_call
from ._instruments import GenAIMetrics, HttpServerMetrics, Instruments, LlmProxyMetrics
from ._logging import JSONLogFormatter, install_trace_context
from ._options import CardinalityOptions, TelemetryOptions
from ._setup import Telemetry, TelemetryAlreadyConfigured, configure_telemetry, get_telemetry
from ._version import __version__
from ._wsgi import TelemetryWSGIMiddleware

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._otlp_exporter import FastOTLPSpanExporter


def __getattr__(name: str) -> object:
    # imported on first use: it imports the SDK's OTLP/HTTP exporter (requests and protobuf)
    if name == "FastOTLPSpanExporter":
        from ._otlp_exporter import FastOTLPSpanExporter

        return FastOTLPSpanExporter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ROUTE_KEY",
    "BoundedValues",
    "CardinalityOptions",
    "FastOTLPSpanExporter",
    "GenAIClientCall",
    "GenAIMetrics",
    "HttpServerMetrics",
    "Instruments",
    "JSONLogFormatter",
    "LlmProxyMetrics",
    "Telemetry",
    "TelemetryAlreadyConfigured",
    "TelemetryMiddleware",
    "TelemetryOptions",
    "TelemetryWSGIMiddleware",
    "__version__",
    "add_event",
    "annotate",
    "configure_telemetry",
    "genai_call",
    "get_telemetry",
    "install_trace_context",
    "request_span",
    "route_template",
    "span",
    "traced",
]
