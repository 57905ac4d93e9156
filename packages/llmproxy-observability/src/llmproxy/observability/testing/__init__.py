"""Test helpers: a local OTLP/HTTP receiver that decodes what it receives (needs ``opentelemetry-proto``)."""

from ._receiver import OTLPReceiver, ReceivedLog, ReceivedMetric, ReceivedSpan

__all__ = ["OTLPReceiver", "ReceivedLog", "ReceivedMetric", "ReceivedSpan"]
