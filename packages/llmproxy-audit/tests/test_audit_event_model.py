"""The event model: ids carry the event time, values are bounded JSON, bad input names its field."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pydantic
import pytest

from llmproxy.audit import MAX_VALUES_BYTES, MAX_VALUES_DEPTH, ActorType, AuditEvent, Outcome, uuid7
from llmproxy.audit._uuid7 import datetime_to_ms, uuid7_ms


def make(**fields: object) -> AuditEvent:
    return AuditEvent.model_validate({"action": "tenant.create", "entity_type": "tenant", **fields})


def test_event_id_is_a_uuid7_carrying_the_timestamp_millisecond() -> None:
    when = datetime(2025, 3, 4, 5, 6, 7, 891_234, tzinfo=UTC)
    event = make(timestamp=when)
    assert event.event_id.version == 7
    assert uuid7_ms(event.event_id) == datetime_to_ms(when)
    assert event.timestamp == when.replace(microsecond=891_000)


def test_timestamp_is_derived_from_a_given_event_id() -> None:
    event_id = uuid7(1_700_000_000_123)
    event = AuditEvent.for_id(event_id, action="tenant.create", entity_type="tenant")
    assert event.timestamp == datetime(2023, 11, 14, 22, 13, 20, 123_000, tzinfo=UTC)


def test_ids_made_in_one_millisecond_sort_in_creation_order() -> None:
    ids = [uuid7(1_700_000_000_000) for _ in range(500)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 500


def test_defaults_are_system_actor_success_and_schema_version_1() -> None:
    event = make()
    assert (event.actor_type, event.outcome, event.schema_version) == (ActorType.SYSTEM, Outcome.SUCCESS, 1)


def test_an_id_that_disagrees_with_the_timestamp_is_rejected() -> None:
    when = datetime(2025, 1, 1, tzinfo=UTC)
    with pytest.raises(pydantic.ValidationError, match="disagree"):
        make(timestamp=when, event_id=uuid7(datetime_to_ms(when + timedelta(seconds=1))))


def test_a_non_v7_event_id_is_rejected_naming_the_field() -> None:
    with pytest.raises(pydantic.ValidationError, match="event_id"):
        make(event_id=uuid.uuid4(), timestamp=datetime.now(UTC))


def test_a_naive_timestamp_is_rejected() -> None:
    with pytest.raises(pydantic.ValidationError, match="timestamp"):
        make(timestamp=datetime(2025, 1, 1), event_id=uuid7(1_735_689_600_000))


@pytest.mark.parametrize("field", ["old_values", "new_values", "metadata"])
def test_values_larger_than_the_bound_are_rejected_naming_the_field(field: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=field):
        make(**{field: {"blob": "x" * MAX_VALUES_BYTES}})


def test_values_at_the_bound_are_accepted() -> None:
    overhead = len('{"blob":""}')
    assert make(new_values={"blob": "x" * (MAX_VALUES_BYTES - overhead)}).new_values is not None


def test_values_nested_too_deep_are_rejected() -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(MAX_VALUES_DEPTH + 1):
        node["x"] = {}
        node = node["x"]  # type: ignore[assignment]
    with pytest.raises(pydantic.ValidationError, match="deeper"):
        make(new_values=deep)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {1, 2}, b"bytes"])
def test_values_that_are_not_json_are_rejected(value: object) -> None:
    with pytest.raises(pydantic.ValidationError, match="new_values"):
        make(new_values={"v": value})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("action", ""),
        ("action", "has space"),
        ("entity_type", "x" * 101),
        ("ip_address", "not-an-ip"),
        ("actor_type", "robot"),
        ("outcome", "maybe"),
        ("user_agent", "u" * 1001),
        ("schema_version", 2),
    ],
)
def test_bad_fields_are_rejected_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(pydantic.ValidationError, match=field):
        make(**{field: value})


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(pydantic.ValidationError, match="prompt"):
        make(prompt="hello")


def test_json_round_trip_gives_the_same_event() -> None:
    event = make(tenant_id=uuid.uuid4(), new_values={"a": [1, 2.5, None, "é"]}, ip_address="::1")
    assert AuditEvent.model_validate_json(event.model_dump_json()) == event


def test_the_uuid7_check_and_millisecond_arithmetic_agree_with_the_standard_library() -> None:
    import random
    from datetime import timedelta, timezone

    from llmproxy.audit._uuid7 import datetime_to_ms, is_uuid7, ms_to_datetime, uuid7

    rng = random.Random(7)
    india = timezone(timedelta(hours=5, minutes=30))
    for _ in range(5000):
        value = uuid.UUID(int=rng.getrandbits(128))
        assert is_uuid7(value) == (value.version == 7 and value.variant == uuid.RFC_4122)
        ms = rng.randrange(0, 2**47)
        assert is_uuid7(uuid7(ms))
        when = ms_to_datetime(ms)
        assert datetime_to_ms(when) == ms == round(when.timestamp() * 1000)
        assert datetime_to_ms(when.astimezone(india)) == ms


def test_an_event_id_of_version_7_but_another_variant_is_rejected() -> None:
    when = datetime(2025, 1, 1, tzinfo=UTC)
    good = uuid7(datetime_to_ms(when))
    other_variant = uuid.UUID(int=good.int | (0b11 << 62))  # version 7, Microsoft's variant
    assert (other_variant.int >> 76) & 0xF == 7  # (uuid.UUID.version says None outside the RFC variant)
    with pytest.raises(pydantic.ValidationError, match="event_id"):
        make(timestamp=when, event_id=other_variant)


def test_timestamps_pydantic_reads_and_the_standard_library_does_not_are_still_read() -> None:
    event = make(timestamp=1_735_689_600)  # Unix seconds: pydantic's datetime reading, then UTC
    assert event.timestamp == datetime(2025, 1, 1, tzinfo=UTC)
    assert event.timestamp.tzinfo is UTC
    decoded = AuditEvent.model_validate_json(
        b'{"action": "a", "entity_type": "b", "timestamp": "2025-01-01T05:30:00.250+05:30"}'
    )
    assert decoded.timestamp == datetime(2025, 1, 1, 0, 0, 0, 250_000, tzinfo=UTC)
    assert decoded.timestamp.tzinfo is UTC
    with pytest.raises(pydantic.ValidationError, match="timestamp"):
        AuditEvent.model_validate_json(b'{"action": "a", "entity_type": "b", "timestamp": "yesterday"}')
