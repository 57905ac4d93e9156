"""The per-tenant hash chain and its signed checkpoints (pure: no I/O).

Each stored event's hash is ``SHA-256(canonical JSON of {the event's stored fields, tenant, seq, previous
hash})``, so editing any field, deleting a row or moving one to another place in the sequence breaks a link.
The canonical form is ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` in UTF-8 with
the event time as integer Unix milliseconds — a function of the stored columns only, so verification
recomputes it from the table. A checkpoint is ``(tenant, seq, hash)`` signed with HMAC-SHA256: whoever can
write the table but lacks the key cannot rebuild a chain that still matches the checkpoints.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from json.encoder import encode_basestring as _encode_str  # C in CPython
from typing import Any, NamedTuple

from ._models import AuditEvent

GENESIS = bytes(32)
#: The chain of events that belong to no tenant (platform-level actions).
NO_TENANT = uuid.UUID(int=0)
CHAIN_VERSION = 1


def _no_default(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _make_encoder() -> Any:
    """The C encoder ``json.dumps`` builds on every call with these options, built once (None without it)."""
    try:
        from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - CPython has it
        return None
    if c_make_encoder is None:  # pragma: no cover
        return None
    # markers=None: no cycle check (a cycle ends in RecursionError, as deep nesting does); sort_keys, no
    # skipkeys, allow_nan=False: the same output as json.dumps(sort_keys=True, separators=(",", ":"),
    # ensure_ascii=False, allow_nan=False).
    return c_make_encoder(None, _no_default, encode_basestring, None, ":", ",", True, False, False)


_ENCODE = _make_encoder()


def canonical_json(value: Any) -> bytes:
    if _ENCODE is not None:
        return "".join(_ENCODE(value, 0)).encode()
    return json.dumps(  # pragma: no cover - without the C encoder
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def event_row(event: AuditEvent) -> dict[str, Any]:
    """The stored columns of an event (before its place in the chain is known)."""
    event_id = event.event_id
    return {
        "event_id": event_id,
        "event_ms": event_id.int >> 80,  # (event.unix_ms, without its two calls: this runs once an event)
        "tenant_id": event.tenant_id or NO_TENANT,
        "schema_version": event.schema_version,
        "action": event.action,
        "entity_type": event.entity_type,
        "entity_id": event.entity_id,
        "actor_type": str(event.actor_type),  # a StrEnum's str() is its value (Enum's .value is Python)
        "user_id": event.user_id,
        "api_key_id": event.api_key_id,
        "outcome": str(event.outcome),
        "request_id": event.request_id,
        "ip_address": event.ip_address,
        "user_agent": event.user_agent,
        "old_values": event.old_values,
        "new_values": event.new_values,
        "metadata": event.metadata,
    }


_DOCUMENT_FIELDS = (
    "schema_version", "action", "entity_type", "entity_id", "actor_type", "user_id", "api_key_id", "outcome",
    "request_id", "ip_address", "user_agent", "old_values", "new_values", "metadata",
)  # fmt: skip


def event_hash(row: Mapping[str, Any], seq: int, prev_hash: bytes) -> bytes:
    """The chain hash of a row (``event_row`` keys; ``event_ms`` the event time) at ``seq`` after
    ``prev_hash``."""
    document = {name: row[name] for name in _DOCUMENT_FIELDS}
    document["v"] = CHAIN_VERSION
    document["event_id"] = str(row["event_id"])
    document["time_ms"] = row["event_ms"]
    document["tenant_id"] = str(row["tenant_id"])
    document["seq"] = seq
    document["prev"] = prev_hash.hex()
    return hashlib.sha256(canonical_json(document)).digest()


# The canonical document's keys in the order ``sort_keys`` writes them. ``hash_parts`` writes them in this
# order, cut around the two that depend on the row's place in the chain (``prev`` and ``seq``).
_HASHED_KEYS = sorted((*_DOCUMENT_FIELDS, "v", "event_id", "time_ms", "tenant_id", "seq", "prev"))
assert _HASHED_KEYS == [
    "action", "actor_type", "api_key_id", "entity_id", "entity_type", "event_id", "ip_address", "metadata",
    "new_values", "old_values", "outcome", "prev", "request_id", "schema_version", "seq", "tenant_id",
    "time_ms", "user_agent", "user_id", "v",
]  # fmt: skip


class HashParts(NamedTuple):
    """A row's canonical document without ``prev`` and ``seq``, in the three pieces around them, and the
    canonical JSON of its three JSON values (what is stored: the text the hash covers)."""

    before_prev: bytes  # '{"action":...,"outcome":...,'
    between: bytes  # '"request_id":...,"schema_version":...'
    after_seq: bytes  # '"tenant_id":...,"v":1}'
    metadata: bytes
    new_values: bytes | None
    old_values: bytes | None
    #: ``(metadata, new_values, old_values)`` as stored, when they differ from the row's (see
    #: :func:`stable_numbers`); None when the row's are stored as they are.
    stable: tuple[Any, Any, Any] | None = None


def stable_numbers(value: Any) -> Any:
    """``value`` with its floats as PostgreSQL's jsonb gives them back, so the canonical form of a value
    read from the table is the one hashed when it was stored.

    jsonb keeps a number as an exact decimal and writes it without an exponent, and has no negative zero:
    the float ``1e16`` comes back as the integer ``10000000000000000`` (and ``1.5e300`` as an integer of 301
    digits), ``-0.0`` as ``0.0``. Such floats become those numbers here (any float written with ``e+`` is
    an integer: the repr uses an exponent from 1e16 up). Other floats come back as they went in.
    """
    if type(value) is float:
        if value == 0.0:
            return 0.0
        text = repr(value)
        return int(Decimal(text)) if "e+" in text else value
    if isinstance(value, dict):
        return {k: stable_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [stable_numbers(v) for v in value]
    return value


def _value_text(value: Any) -> tuple[Any, bytes]:
    """A JSON value (stable, see :func:`stable_numbers`) and its canonical text."""
    text = canonical_json(value)
    if b"e+" in text or b"-0.0" in text:  # (a string holding either costs only the walk)
        stable = stable_numbers(value)
        stable_text = canonical_json(stable)
        if stable_text != text:
            return stable, stable_text
    return value, text


_TENANT_TEXT: dict[uuid.UUID, str] = {}


def _text(value: str | None) -> str:
    """A JSON string (or null) exactly as the canonical encoder writes it."""
    return "null" if value is None else _encode_str(value)


def hash_parts(row: Mapping[str, Any]) -> HashParts:
    """The parts of ``row``'s canonical document that do not depend on its place in the chain.

    ``hash_at(hash_parts(row), seq, prev)`` equals ``event_hash(row, seq, prev)`` byte for byte, for the row
    as stored: with the JSON values of ``parts.stable`` when it is set (see :func:`stable_numbers`). The
    document's keys are known and fixed, so it is written here key by key in canonical order (what
    ``canonical_json`` of the whole document does with a sorted dict, at twice the cost), with each JSON value
    encoded on its own: that text is also what the store writes. The row's scalars are strings or null, and
    ``schema_version`` and ``event_ms`` integers, as ``event_row`` makes them. (The nullable strings are
    written out inline: this runs once per consumed event, and each helper call cost ~0.1-0.2 us of a budget
    of ~50 us per event.)
    """
    enc = _encode_str
    tenant = row["tenant_id"]
    tenant_text = _TENANT_TEXT.get(tenant)
    if tenant_text is None:
        tenant_text = enc(str(tenant))
        if len(_TENANT_TEXT) < 10_000:  # tenants repeat; UUID.__str__ is Python
            _TENANT_TEXT[tenant] = tenant_text
    md, metadata = _value_text(row["metadata"])
    nv, new_values = (None, None) if row["new_values"] is None else _value_text(row["new_values"])
    ov, old_values = (None, None) if row["old_values"] is None else _value_text(row["old_values"])
    stable = None
    if md is not row["metadata"] or nv is not row["new_values"] or ov is not row["old_values"]:
        stable = (md, nv, ov)
    v = row["api_key_id"]
    api_key_id = "null" if v is None else enc(v)
    v = row["entity_id"]
    entity_id = "null" if v is None else enc(v)
    v = row["ip_address"]
    ip_address = "null" if v is None else enc(v)
    v = row["request_id"]
    request_id = "null" if v is None else enc(v)
    v = row["user_agent"]
    user_agent = "null" if v is None else enc(v)
    v = row["user_id"]
    user_id = "null" if v is None else enc(v)
    before_prev = b"".join(
        (
            (
                f'{{"action":{_text(row["action"])},"actor_type":{_text(row["actor_type"])},'
                f'"api_key_id":{api_key_id},"entity_id":{entity_id},'
                f'"entity_type":{_text(row["entity_type"])},"event_id":{enc(str(row["event_id"]))},'
                f'"ip_address":{ip_address},"metadata":'
            ).encode(),
            metadata,
            b',"new_values":',
            b"null" if new_values is None else new_values,
            b',"old_values":',
            b"null" if old_values is None else old_values,
            f',"outcome":{_text(row["outcome"])},'.encode(),
        )
    )
    between = f'"request_id":{request_id},"schema_version":{int(row["schema_version"])}'
    after_seq = (
        f'"tenant_id":{tenant_text},"time_ms":{int(row["event_ms"])},"user_agent":{user_agent},'
        f'"user_id":{user_id},"v":{CHAIN_VERSION}}}'
    )
    return HashParts(
        before_prev, between.encode(), after_seq.encode(), metadata, new_values, old_values, stable
    )


def hash_at(parts: HashParts, seq: int, prev_hash: bytes) -> bytes:
    """The chain hash of the row ``parts`` came from, at ``seq`` after ``prev_hash``."""
    return hashlib.sha256(
        b"".join(
            (
                parts.before_prev,
                b'"prev":"',
                prev_hash.hex().encode(),
                b'",',
                parts.between,
                b',"seq":',
                str(seq).encode(),
                b",",
                parts.after_seq,
            )
        )
    ).digest()


def link(rows: Iterable[dict[str, Any]], head_seq: int, head_hash: bytes) -> tuple[int, bytes]:
    """Give each row (of one tenant, in order) its ``seq``, ``prev_hash`` and ``hash``; return the new
    head. A row may carry its ``hash_parts`` under ``"parts"`` (computed ahead: linking is then cheap)."""
    seq, prev = head_seq, head_hash
    for row in rows:
        seq += 1
        parts = row.get("parts")
        digest = hash_at(parts, seq, prev) if parts is not None else event_hash(row, seq, prev)
        row["seq"], row["prev_hash"], row["hash"] = seq, prev, digest
        prev = digest
    return seq, prev


# -- checkpoints ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement: tenant ``tenant_id``'s chain had hash ``hash`` at ``seq``.

    ``kind`` is ``periodic`` or ``retention`` (written before old rows are dropped). ``retained`` lists the
    ``(seq, hash)`` of rows kept although their seq is below ``seq`` (events that arrived late into an older
    month), so those stay verifiable too.
    """

    tenant_id: uuid.UUID
    seq: int
    hash: bytes
    created_ms: int
    kind: str = "periodic"
    retained: tuple[tuple[int, bytes], ...] = ()
    key_id: str = ""
    signature: str = ""

    def payload(self) -> bytes:
        return canonical_json(
            {
                "v": CHAIN_VERSION,
                "tenant_id": str(self.tenant_id),
                "seq": self.seq,
                "hash": self.hash.hex(),
                "created_ms": self.created_ms,
                "kind": self.kind,
                "retained": [[s, h.hex()] for s, h in self.retained],
            }
        )


def key_id_of(key: bytes) -> str:
    """A short public name for a key (the first 8 bytes of its SHA-256), so rotation can keep old keys."""
    return hashlib.sha256(b"llmproxy-audit-checkpoint-key:" + key).hexdigest()[:16]


@dataclass(frozen=True)
class CheckpointSigner:
    """Signs with ``key``; verifies with it or any of ``old_keys`` (key rotation)."""

    key: bytes
    old_keys: tuple[bytes, ...] = ()
    _keys: dict[str, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.key) < 16:
            raise ValueError("the checkpoint key must be at least 16 bytes")
        object.__setattr__(self, "_keys", {key_id_of(k): k for k in (self.key, *self.old_keys)})

    @property
    def key_id(self) -> str:
        return key_id_of(self.key)

    def sign(self, checkpoint: Checkpoint) -> Checkpoint:
        signature = hmac.new(self.key, checkpoint.payload(), hashlib.sha256).hexdigest()
        return Checkpoint(
            checkpoint.tenant_id,
            checkpoint.seq,
            checkpoint.hash,
            checkpoint.created_ms,
            checkpoint.kind,
            checkpoint.retained,
            self.key_id,
            signature,
        )

    def verify(self, checkpoint: Checkpoint) -> bool:
        key = self._keys.get(checkpoint.key_id)
        if key is None:
            return False
        expected = hmac.new(key, checkpoint.payload(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, checkpoint.signature)
