"""The audit event: the seed's fields plus id, request id, actor type, outcome and schema version."""

from __future__ import annotations

import ipaddress
import json
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from ._uuid7 import datetime_to_ms, is_uuid7, ms_to_datetime, uuid7, uuid7_ms

SCHEMA_VERSION = 1
#: Largest serialized size of each of ``old_values``, ``new_values`` and ``metadata``.
MAX_VALUES_BYTES = 64 * 1024
#: Deepest nesting accepted in those values.
MAX_VALUES_DEPTH = 32


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
    if value is None:
        return None
    if not _depth_ok(value, MAX_VALUES_DEPTH):
        raise ValueError(f"{field} is nested deeper than {MAX_VALUES_DEPTH} levels")
    try:
        size = len(json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False).encode())
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field} must hold JSON values only (finite numbers, str keys): {exc}") from None
    if size > MAX_VALUES_BYTES:
        raise ValueError(f"{field} is {size} bytes of JSON; at most {MAX_VALUES_BYTES} are accepted")
    return value


class AuditEvent(BaseModel):
    """One audited action. Frozen; ``event_id`` is a UUIDv7 whose time is ``timestamp`` (to the millisecond).

    Give either or both of ``event_id`` and ``timestamp``: the missing one is derived from the other (both
    missing: now). Timestamps are kept to the millisecond, in UTC.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    event_id: uuid.UUID
    timestamp: datetime
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

    @model_validator(mode="before")
    @classmethod
    def _id_and_time(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        event_id, timestamp = data.get("event_id"), data.get("timestamp")
        if event_id is None and timestamp is None:
            now = datetime.now(UTC)
            return {**data, "timestamp": now, "event_id": uuid7(datetime_to_ms(now))}
        if event_id is None and isinstance(timestamp, datetime) and timestamp.tzinfo is not None:
            return {**data, "event_id": uuid7(datetime_to_ms(timestamp))}
        if timestamp is None and isinstance(event_id, uuid.UUID) and is_uuid7(event_id):
            return {**data, "timestamp": ms_to_datetime(uuid7_ms(event_id))}
        return data

    @field_validator("event_id")
    @classmethod
    def _v7(cls, value: uuid.UUID) -> uuid.UUID:
        if not is_uuid7(value):
            raise ValueError("event_id must be a version-7 (time-ordered) UUID")
        return value

    @field_validator("timestamp")
    @classmethod
    def _utc_ms(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("timestamp must be timezone-aware")
        return ms_to_datetime(datetime_to_ms(value))

    @field_validator("old_values", "new_values", "metadata")
    @classmethod
    def _bounded(cls, value: JSONObject | None, info: Any) -> JSONObject | None:
        return check_json_object(value, info.field_name)

    @field_validator("ip_address")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"not an IP address: {value[:60]!r}") from None

    @model_validator(mode="after")
    def _id_matches_time(self) -> AuditEvent:
        if uuid7_ms(self.event_id) != datetime_to_ms(self.timestamp):
            raise ValueError("event_id and timestamp disagree: a UUIDv7 carries its event's millisecond")
        return self

    @property
    def unix_ms(self) -> int:
        return uuid7_ms(self.event_id)


def new_event(**fields: Any) -> AuditEvent:
    """An :class:`AuditEvent` (validated) from keyword fields."""
    return AuditEvent.model_validate(fields)
