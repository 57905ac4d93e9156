"""Finished spans as an OTLP ``ExportTraceServiceRequest``, written straight in protobuf's wire format.

The OTLP exporter's own encoder (``opentelemetry-exporter-otlp-proto-common``) builds a protobuf message
object per span, per attribute and per attribute value, then serialises the tree: about 80 µs of Python per
span of the gateway (18 attributes), measured. It runs in the ``BatchSpanProcessor``'s thread, but under the
GIL that is time taken from the requests. This module writes the same bytes directly: each attribute key's
encoding is kept, each resource's and instrumentation scope's too (they are the same objects span after
span), and every value is written once, with no intermediate objects.

The output is the message the stock encoder builds, field for field (the tests decode both with
``opentelemetry-proto`` and compare them, over arbitrary attribute values). As there, an attribute whose
value cannot be encoded (a type OTLP has no value for, an integer outside int64) is left out and logged.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

logger = logging.getLogger("llmproxy.observability.otlp")

_SMALL = [bytes((i,)) for i in range(128)]
_DOUBLE = struct.Struct("<d").pack
_FIXED64 = struct.Struct("<Q").pack
_FIXED32 = struct.Struct("<I").pack
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

# OTLP's SpanFlags: the span says whether its parent is remote, and if so that it is
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
# SpanKind: the API's INTERNAL..CONSUMER are 0..4, OTLP's SPAN_KIND_INTERNAL..CONSUMER 1..5
_KINDS = {0: b"\x30\x01", 1: b"\x30\x02", 2: b"\x30\x03", 3: b"\x30\x04", 4: b"\x30\x05"}
_NONE = object()
_MAX_KEYS = 4096  # attribute keys whose encoding is kept (a process has few; past this, encoded each time)


def varint(n: int) -> bytes:
    """An unsigned integer (below 2^64) as a protobuf varint."""
    if n < 0x80:
        return _SMALL[n]
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, data: bytes) -> bytes:
    """A length-delimited field: its tag, the length, the bytes."""
    return tag + varint(len(data)) + data


class _Unencodable(Exception):
    """A value OTLP has no encoding for (the attribute is left out)."""


def _int(value: int) -> bytes:
    if value < 0:
        if value < _INT64_MIN:
            raise _Unencodable(f"{value} is below int64")
        return varint(value + (1 << 64))
    if value > _INT64_MAX:
        raise _Unencodable(f"{value} is above int64")
    return varint(value)


def any_value(value: Any) -> bytes:
    """An ``AnyValue`` message's bytes (the stock encoder's ``_encode_value``, its checks in its order)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        return b"\x18" + _int(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join([_field(b"\x0a", any_value(v)) for v in value]))
    if isinstance(value, Mapping):
        pairs = [_field(b"\x0a", _key(str(k)) + _field(b"", any_value(v))) for k, v in value.items()]
        return _field(b"\x32", b"".join(pairs))
    raise _Unencodable(f"invalid type {type(value).__name__} of value {value!r}")


_keys: dict[str, bytes] = {}


def _key(key: str) -> bytes:
    """A ``KeyValue``'s key field and its value field's tag (kept for the first keys seen)."""
    encoded = _keys.get(key)
    if encoded is None:
        encoded = _field(b"\x0a", key.encode()) + b"\x12"
        if len(_keys) < _MAX_KEYS:
            _keys[key] = encoded
    return encoded


def attributes(tag: bytes, items: Mapping[str, Any] | None) -> list[bytes]:
    """Each attribute as a ``KeyValue`` field under ``tag``; the common value types written inline."""
    out: list[bytes] = []
    if not items:
        return out
    append = out.append
    keys = _keys
    small = _SMALL
    for key, value in items.items():
        kind = type(value)
        try:
            head = keys.get(key) or _key(key)  # the key field, then the value's tag
            if kind is str:
                data = value.encode()
                n = len(data)
                size = len(head) + n + 3  # head, the value's length, its string field's tag and length, data
                if size < 0x80:
                    append(b"%b%b%b%b\x0a%b%b" % (tag, small[size], head, small[n + 2], small[n], data))
                    continue
                value_bytes = b"\x0a" + varint(n) + data
            elif kind is int:
                value_bytes = b"\x18" + (small[value] if 0 <= value < 0x80 else _int(value))
            elif kind is bool:
                value_bytes = b"\x10\x01" if value else b"\x10\x00"
            else:
                value_bytes = any_value(value)
        except Exception as exc:  # as the stock encoder: the attribute is left out, the rest exported
            logger.error("Failed to encode key %s: %s", key, exc)
            continue
        body = head + varint(len(value_bytes)) + value_bytes
        append(tag + varint(len(body)) + body)
    return out


def _trace_state(state: Any) -> bytes:
    if not state:
        return b""
    text = ",".join([f"{key}={value}" for key, value in state.items()])
    return _field(b"\x1a", text.encode()) if text else b""


def _flags(parent: Any) -> int:
    if parent is not None and parent.is_remote:
        return _HAS_IS_REMOTE | _IS_REMOTE
    return _HAS_IS_REMOTE


def _attributes_of(sdk_span: Any) -> Mapping[str, Any]:
    """The span's attributes: the SDK's own dict where it has one (``ReadableSpan.attributes`` is a read-only
    proxy of a ``BoundedAttributes``, whose items cost a Python call each), else the public mapping."""
    raw = getattr(getattr(sdk_span, "_attributes", None), "_dict", None)
    return raw if type(raw) is dict else sdk_span.attributes


def span(sdk_span: Any) -> bytes:
    """One ``Span`` message's bytes."""
    ctx = sdk_span.context
    parts = [b"\x0a\x10", ctx.trace_id.to_bytes(16, "big"), b"\x12\x08", ctx.span_id.to_bytes(8, "big")]
    state = ctx.trace_state
    if state:
        parts.append(_trace_state(state))
    parent = sdk_span.parent
    if parent:
        parts.append(b"\x22\x08")
        parts.append(parent.span_id.to_bytes(8, "big"))
    name = sdk_span.name
    if name:
        parts.append(_field(b"\x2a", name.encode()))
    parts.append(_KINDS[sdk_span.kind.value])
    start, end = sdk_span.start_time, sdk_span.end_time
    if start:
        parts.append(b"\x39" + _FIXED64(start))
    if end:
        parts.append(b"\x41" + _FIXED64(end))
    parts += attributes(b"\x4a", _attributes_of(sdk_span))
    dropped = sdk_span.dropped_attributes
    if dropped:
        parts.append(b"\x50" + varint(dropped))
    for event in sdk_span.events:
        body = [b"\x09" + _FIXED64(event.timestamp)] if event.timestamp else []
        if event.name:
            body.append(_field(b"\x12", event.name.encode()))
        body += attributes(b"\x1a", event.attributes)
        if event.dropped_attributes:
            body.append(b"\x20" + varint(event.dropped_attributes))
        parts.append(_field(b"\x5a", b"".join(body)))
    dropped = sdk_span.dropped_events
    if dropped:
        parts.append(b"\x60" + varint(dropped))
    for link in sdk_span.links:
        linked = link.context
        body = [b"\x0a\x10", linked.trace_id.to_bytes(16, "big")]
        body += [b"\x12\x08", linked.span_id.to_bytes(8, "big")]
        body += attributes(b"\x22", link.attributes)
        if link.dropped_attributes:
            body.append(b"\x28" + varint(link.dropped_attributes))
        body.append(b"\x35" + _FIXED32(_flags(linked)))
        parts.append(_field(b"\x6a", b"".join(body)))
    dropped = sdk_span.dropped_links
    if dropped:
        parts.append(b"\x70" + varint(dropped))
    status = sdk_span.status
    if status is not None:
        code = status.status_code.value
        message = status.description
        text = _field(b"\x12", message.encode()) if message else b""
        parts.append(_field(b"\x7a", text + (b"\x18" + varint(code) if code else b"")))
    parts.append(b"\x85\x01" + _FIXED32(_flags(parent)))
    return b"".join(parts)


class SpanEncoder:
    """Encodes batches of finished spans; keeps each resource's and scope's encoding (by identity)."""

    def __init__(self) -> None:
        self._resources: dict[int, tuple[Any, bytes]] = {}
        self._scopes: dict[int, tuple[Any, tuple[bytes, bytes]]] = {}

    def _resource(self, resource: Any) -> bytes:
        kept = self._resources.get(id(resource))
        if kept is not None and kept[0] is resource:
            return kept[1]
        encoded = _field(b"\x0a", b"".join(attributes(b"\x0a", resource.attributes)))
        if len(self._resources) >= 64:
            self._resources.clear()
        self._resources[id(resource)] = (resource, encoded)
        return encoded

    def _scope(self, scope: Any) -> tuple[bytes, bytes]:
        """A ``ScopeSpans``' scope field and its schema URL field (empty when none)."""
        kept = self._scopes.get(id(scope))
        if kept is not None and kept[0] is scope:
            return kept[1]
        if scope is None:
            encoded = (b"\x0a\x00", b"")
        else:
            body = _field(b"\x0a", scope.name.encode()) if scope.name else b""
            if scope.version:
                body += _field(b"\x12", scope.version.encode())
            body += b"".join(attributes(b"\x1a", scope.attributes))
            schema = scope.schema_url
            encoded = (_field(b"\x0a", body), _field(b"\x1a", schema.encode()) if schema else b"")
        if len(self._scopes) >= 256:
            self._scopes.clear()
        self._scopes[id(scope)] = (scope, encoded)
        return encoded

    def encode(self, spans: Sequence[Any]) -> bytes:
        """An ``ExportTraceServiceRequest``: the spans grouped by resource, then by instrumentation scope."""
        grouped: dict[Any, dict[Any, list[bytes]]] = {}
        last_resource: Any = _NONE
        last_scope: Any = _NONE
        encoded: list[bytes] = []
        for sdk_span in spans:
            # (a batch's spans mostly share one resource and one scope: a Resource hashes by JSON-encoding
            # its attributes, so the dicts are consulted only when either changes)
            resource = sdk_span.resource
            scope = sdk_span.instrumentation_scope or None
            if resource is not last_resource or scope is not last_scope:
                scopes = grouped.get(resource)
                if scopes is None:
                    scopes = grouped[resource] = {}
                encoded = scopes.get(scope)  # type: ignore[assignment]
                if encoded is None:
                    encoded = scopes[scope] = []
                last_resource, last_scope = resource, scope
            encoded.append(span(sdk_span))
        out = []
        for resource, scopes in grouped.items():
            body = [self._resource(resource)]
            for scope, encoded_spans in scopes.items():
                head, schema = self._scope(scope)
                inner = [head]
                for data in encoded_spans:
                    inner.append(b"\x12")
                    inner.append(varint(len(data)))
                    inner.append(data)
                inner.append(schema)
                body.append(_field(b"\x12", b"".join(inner)))
            if resource.schema_url:
                body.append(_field(b"\x1a", resource.schema_url.encode()))
            out.append(_field(b"\x0a", b"".join(body)))
        return b"".join(out)
