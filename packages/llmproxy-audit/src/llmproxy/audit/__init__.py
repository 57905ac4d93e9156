"""Audit events: published without blocking, consumed into PostgreSQL exactly once, redacted, hash-chained."""

from ._asgi import AuditMiddleware
from ._chain import NO_TENANT, Checkpoint, CheckpointSigner, canonical_json, event_hash
from ._consumer import AuditConsumer, ConsumerStats, consumer_from_url, dead_letters, transport_from_url
from ._http import LLM_REQUEST_COMPLETED
from ._models import MAX_VALUES_BYTES, MAX_VALUES_DEPTH, SCHEMA_VERSION, ActorType, AuditEvent, Outcome
from ._options import AMQP_PREFIX, DEAD_LETTER_STREAM, EVENTS_STREAM, GROUP, AuditOptions, AuditSettings
from ._publisher import AsyncAuditPublisher, AuditPublisher, PublisherStats
from ._query import AsyncAuditStore, AuditPage, AuditQuery, AuditStore, StoredAuditEvent
from ._redaction import DEFAULT_DENY_KEYS, DEFAULT_TEXT_KEYS, DEFAULT_VALUE_PATTERNS, Redactor
from ._store import store_batch
from ._tables import chain_heads_table, checkpoints_table, events_table
from ._transport import AsyncPublishSink, ConsumerTransport, Delivery, PublishSink, SinkStats
from ._uuid7 import uuid7
from ._verify import VerifyReport, apply_retention, verify_chain
from ._version import __version__
from ._worker import audit_block, audited
from ._wsgi import WSGIAuditMiddleware

__all__ = [
    "AMQP_PREFIX",
    "DEAD_LETTER_STREAM",
    "DEFAULT_DENY_KEYS",
    "DEFAULT_TEXT_KEYS",
    "DEFAULT_VALUE_PATTERNS",
    "EVENTS_STREAM",
    "GROUP",
    "LLM_REQUEST_COMPLETED",
    "MAX_VALUES_BYTES",
    "MAX_VALUES_DEPTH",
    "NO_TENANT",
    "SCHEMA_VERSION",
    "ActorType",
    "AsyncAuditPublisher",
    "AsyncAuditStore",
    "AsyncPublishSink",
    "AuditConsumer",
    "AuditEvent",
    "AuditMiddleware",
    "AuditOptions",
    "AuditPage",
    "AuditPublisher",
    "AuditQuery",
    "AuditSettings",
    "AuditStore",
    "Checkpoint",
    "CheckpointSigner",
    "ConsumerStats",
    "ConsumerTransport",
    "Delivery",
    "Outcome",
    "PublishSink",
    "PublisherStats",
    "Redactor",
    "SinkStats",
    "StoredAuditEvent",
    "VerifyReport",
    "WSGIAuditMiddleware",
    "__version__",
    "apply_retention",
    "audit_block",
    "audited",
    "canonical_json",
    "chain_heads_table",
    "checkpoints_table",
    "consumer_from_url",
    "dead_letters",
    "event_hash",
    "events_table",
    "store_batch",
    "transport_from_url",
    "uuid7",
    "verify_chain",
]
