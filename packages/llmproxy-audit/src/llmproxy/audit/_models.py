"""The audit event: the seed's fields plus id, request id, actor type, outcome and schema version."""

from __future__ import annotations

import ipaddress
import json
import time
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    UUID7,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ._uuid7 import datetime_to_ms, is_uuid7, ms_to_datetime, uuid7, uuid7_ms

SCHEMA_VERSION = 1
#: Largest serialized size of each of ``old_values``, ``new_values`` and ``metadata``.
MAX_VALUES_BYTES = 64 * 1024
#: Deepest nesting accepted in those values.
MAX_VALUES_DEPTH = 32
#: Largest serialized event a consumer accepts.
MAX_EVENT_BYTES = 3 * MAX_VALUES_BYTES + 16 * 1024
BOUNDED_BY_BODY = "llmproxy.audit.bounded_by_body"
_BOUNDED = {BOUNDED_BY_BODY: True}


_IPS: dict[str, str] = {}


class ActorType(StrEnum):
    USER = "user"
    API_KEY = "api_key"
    PLATFORM_ADMIN = "platform_admin"
    SYSTEM = "system"


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


Name = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:\-]+$")]
Text200 = Annotated[str, StringConstraints(min_length=1, max_length=200)]
JSONObject = dict[str, Any]


def _depth_ok(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > limit:
                return False
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            if depth > limit:
                return False
            stack.extend((v, depth + 1) for v in item)
    return True


def check_json_object(value: JSONObject | None, field: str) -> JSONObject | None:
    """``value`` if it is a JSON object within the size and depth bounds; ``ValueError`` otherwise."""
    if not value:
        return value
    if not _depth_ok(value, MAX_VALUES_DEPTH):
        raise ValueError(f"{field} is nested deeper than {MAX_VALUES_DEPTH} levels")
    try:
        size = len(json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False).encode())
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field} must hold JSON values only (finite numbers, str keys): {exc}") from None
    if size > MAX_VALUES_BYTES:
        raise ValueError(f"{field} is {size} bytes of JSON; at most {MAX_VALUES_BYTES} are accepted")
    return value


def _now() -> datetime:
    return ms_to_datetime(time.time_ns() // 1_000_000)


def _id_of_timestamp(data: dict[str, Any]) -> uuid.UUID:
    timestamp = data.get("timestamp")
    if not isinstance(timestamp, datetime):  # the timestamp itself failed validation: reported there
        return uuid7(0)
    return uuid7(datetime_to_ms(timestamp))


class AuditEvent(BaseModel):
    """One audited action. Frozen; ``event_id`` is a UUIDv7 whose time is ``timestamp`` (to the millisecond).

    Without ``event_id``, one is made from ``timestamp`` (default: now); an ``event_id`` given must carry the
    millisecond of the ``timestamp`` given with it (:meth:`for_id` derives the timestamp from an id).
    Timestamps are kept to the millisecond, in UTC. (No ``mode="before"`` validator here on purpose: one makes
    pydantic build a Python dict of the JSON before validating, which measured 3x the decoding time.)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    timestamp: datetime = Field(default_factory=_now)
    event_id: UUID7 = Field(default_factory=_id_of_timestamp)
    tenant_id: uuid.UUID | None = None
    actor_type: ActorType = ActorType.SYSTEM
    user_id: Text200 | None = None
    api_key_id: Text200 | None = None
    action: Name
    entity_type: Name
    entity_id: Text200 | None = None
    old_values: JSONObject | None = None
    new_values: JSONObject | None = None
    metadata: JSONObject = Field(default_factory=dict)
    outcome: Outcome = Outcome.SUCCESS
    request_id: Text200 | None = None
    ip_address: str | None = None
    user_agent: Annotated[str, StringConstraints(max_length=1000)] | None = None

    @field_validator("timestamp", mode="wrap")
    @classmethod
    def _utc_ms(cls, value: Any, handler: Any) -> datetime:
        # An ISO string (what every serialized event holds) is parsed by the standard library, so the value
        # carries datetime.UTC: pydantic's own tzinfo class made every later offset lookup cost ~30 us
        # (measured). Anything else goes through pydantic's datetime validation first.
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                value = handler(value)  # pydantic's parser reports it (or reads a form the stdlib does not)
        elif not isinstance(value, datetime):
            value = handler(value)
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            raise ValueError("timestamp must be timezone-aware")
        if value.tzinfo is UTC and value.microsecond % 1000 == 0:
            return value
        return ms_to_datetime(datetime_to_ms(value))  # also replaces pydantic's tzinfo with datetime.UTC

    @field_validator("ip_address")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        known = _IPS.get(value)
        if known is not None:
            return known
        try:
            normal = str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"not an IP address: {value[:60]!r}") from None
        if len(_IPS) < 10_000:  # clients repeat; parsing one costs more than the rest of the event
            _IPS[value] = normal
        return normal

    @model_validator(mode="after")
    def _checks(self, info: ValidationInfo) -> AuditEvent:
        # One Python call for the checks pydantic cannot state (each field validator is a call of its own
        # on every decode: these were half of a consumer's decoding time).
        if not is_uuid7(self.event_id):
            raise ValueError("event_id must be a version-7 (time-ordered) UUID")
        if uuid7_ms(self.event_id) != datetime_to_ms(self.timestamp):
            raise ValueError("event_id and timestamp disagree: a UUIDv7 carries its event's millisecond")
        if not (info.context and info.context.get(BOUNDED_BY_BODY)):  # else decode_event checked the body
            check_json_object(self.old_values, "old_values")
            check_json_object(self.new_values, "new_values")
            check_json_object(self.metadata, "metadata")
        return self

    @property
    def unix_ms(self) -> int:
        return uuid7_ms(self.event_id)

    @classmethod
    def for_id(cls, event_id: uuid.UUID, **fields: Any) -> AuditEvent:
        """An event whose timestamp is the one ``event_id`` (a UUIDv7) carries."""
        if not is_uuid7(event_id):
            raise ValueError("event_id must be a version-7 (time-ordered) UUID")
        return cls(event_id=event_id, timestamp=ms_to_datetime(uuid7_ms(event_id)), **fields)


def decode_event(body: bytes) -> AuditEvent:
    """An event from its JSON, as a consumer receives it (``ValueError`` / ``ValidationError`` when invalid).

    The per-value size and depth checks (two thirds of decoding's time) are replaced by a bound on the whole
    body: a value cannot be much larger than the body it came in, and the JSON parser bounds the nesting (at
    200). Non-finite numbers (which Python's JSON parser accepts) send it through the full checks.
    """
    if len(body) > MAX_EVENT_BYTES:
        raise ValueError(f"the event is {len(body)} bytes; at most {MAX_EVENT_BYTES} are accepted")
    if b"NaN" in body or b"Infinity" in body:
        return AuditEvent.model_validate_json(body)
    return AuditEvent.model_validate_json(body, context=_BOUNDED)


def new_event(**fields: Any) -> AuditEvent:
    """An :class:`AuditEvent` (validated) from keyword fields."""
    return AuditEvent.model_validate(fields)
