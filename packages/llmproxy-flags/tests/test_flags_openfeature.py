"""The OpenFeature provider, through the real openfeature-sdk client."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from llmproxy.core import RequestContext, use_context
from llmproxy.flags import Constraint, Evaluator, Feature, Flag, Payload, Snapshot, Strategy, Variant
from llmproxy.flags.openfeature import FlagsProvider

TENANT_A = uuid.UUID("0e5a2f2c-35a0-4b8e-9a4c-2f8b7d1c6e01")


def payload_flag(name: str, type_: str, value: str) -> Feature:
    return Feature(
        name=name, variants=(Variant(name="v", weight=1000, payload=Payload(type=type_, value=value)),)
    )


FLAGS = [
    Feature(name="static"),
    Feature(name="off", enabled=False),
    Feature(
        name="pro-only",
        strategies=(
            Strategy(
                name="default", constraints=(Constraint(context_name="plan", operator="IN", values=("pro",)),)
            ),
        ),
    ),
    Feature(name="user-7", strategies=(Strategy(name="userWithId", parameters={"userIds": "7"}),)),
    Flag(key="tenant-a", enabled_for_tenants={TENANT_A}),
    payload_flag("greeting", "string", "hello"),
    payload_flag("limit", "number", "42"),
    payload_flag("ratio", "number", "0.25"),
    payload_flag("config", "json", '{"model": "gpt-4o", "max": 3}'),
    Feature(
        name="ab",
        variants=(
            Variant(name="a", weight=500, payload=Payload(type="string", value="A")),
            Variant(name="b", weight=500, payload=Payload(type="string", value="B")),
        ),
    ),
]


@pytest.fixture
def flags() -> Evaluator:
    return Evaluator(Snapshot.of(FLAGS, "v1"))


@pytest.fixture
def client(flags: Evaluator) -> Iterator[OpenFeatureClient]:
    api.set_provider(FlagsProvider(flags), "flags-test")
    yield api.get_client("flags-test")
    api.shutdown()


def test_a_boolean_is_the_flag_with_its_reason(client: OpenFeatureClient) -> None:
    details = client.get_boolean_details("static", False)
    assert (details.value, details.reason) == (True, Reason.STATIC)
    details = client.get_boolean_details("off", True)
    assert (details.value, details.reason) == (False, Reason.DISABLED)
    details = client.get_boolean_details("pro-only", True, EvaluationContext(attributes={"plan": "pro"}))
    assert (details.value, details.reason) == (True, Reason.TARGETING_MATCH)
    details = client.get_boolean_details("pro-only", True, EvaluationContext(attributes={"plan": "free"}))
    assert (details.value, details.reason) == (False, Reason.DEFAULT)


def test_an_unknown_flag_is_flag_not_found_with_the_default(client: OpenFeatureClient) -> None:
    details = client.get_boolean_details("nope", True)
    assert details.value is True
    assert details.error_code == ErrorCode.FLAG_NOT_FOUND
    assert details.reason == Reason.ERROR


def test_the_targeting_key_is_the_user_id(client: OpenFeatureClient) -> None:
    assert client.get_boolean_value("user-7", False, EvaluationContext(targeting_key="7"))
    assert not client.get_boolean_value("user-7", False, EvaluationContext(targeting_key="8"))


def test_the_current_request_context_is_underneath(client: OpenFeatureClient) -> None:
    with use_context(RequestContext(tenant_id=TENANT_A)):
        assert client.get_boolean_value("tenant-a", False)
    assert not client.get_boolean_value("tenant-a", False)


def test_typed_values_come_from_the_variant_payload(client: OpenFeatureClient) -> None:
    assert client.get_string_value("greeting", "x") == "hello"
    assert client.get_integer_value("limit", 0) == 42
    assert client.get_float_value("ratio", 0.0) == 0.25
    assert client.get_object_value("config", {}) == {"model": "gpt-4o", "max": 3}
    details = client.get_string_details("ab", "x", EvaluationContext(targeting_key="user-1"))
    assert details.reason == Reason.SPLIT
    assert details.value == {"a": "A", "b": "B"}[details.variant]


def test_a_payload_of_another_type_is_a_type_mismatch(client: OpenFeatureClient) -> None:
    details = client.get_integer_details("greeting", 5)
    assert (details.value, details.error_code) == (5, ErrorCode.TYPE_MISMATCH)
    details = client.get_integer_details("ratio", 5)
    assert (details.value, details.error_code) == (5, ErrorCode.TYPE_MISMATCH)


def test_an_unparsable_payload_is_a_parse_error() -> None:
    # Only the client-API mode lets such a payload in (a definition with it is refused).
    from llmproxy.flags import FeatureSet

    broken = FeatureSet.from_unleash(
        {
            "features": [
                {
                    "name": "bad",
                    "variants": [{"name": "v", "weight": 1, "payload": {"type": "json", "value": "{"}}],
                }
            ]
        }
    )
    api.set_provider(FlagsProvider(Evaluator(Snapshot(broken))), "broken")
    try:
        details = api.get_client("broken").get_object_details("bad", {"d": 1})
    finally:
        api.shutdown()
    assert (details.value, details.error_code) == ({"d": 1}, ErrorCode.PARSE_ERROR)


def test_a_flag_without_variants_gives_the_default_for_typed_values(client: OpenFeatureClient) -> None:
    details = client.get_string_details("static", "fallback")
    assert (details.value, details.reason) == ("fallback", Reason.DEFAULT)


def test_a_snapshot_change_emits_configuration_changed_with_the_flags(
    flags: Evaluator, client: OpenFeatureClient
) -> None:
    seen: list[EventDetails] = []
    client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, seen.append)
    changed = [f for f in FLAGS if not (isinstance(f, Feature) and f.name == "off")] + [Feature(name="off")]
    flags._swap(Snapshot.of([*changed, Feature(name="brand-new")], "v2"))
    assert len(seen) == 1
    assert seen[0].flags_changed == ["brand-new", "off"]
    assert client.get_boolean_value("off", False)
