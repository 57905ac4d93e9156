"""Definitions: what a write may contain, every refusal naming its field; the client-API mode's leniency."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import ValidationError

from llmproxy.flags import Feature, FeatureSet, Flag, Snapshot


def locations(exc: ValidationError) -> list[str]:
    return [".".join(str(part) for part in error["loc"]) for error in exc.errors()]


def feature(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "streaming",
        "enabled": True,
        "strategies": [{"name": "default", "constraints": []}],
    }
    base.update(changes)
    return base


def constraint(**fields: Any) -> dict[str, Any]:
    return {"name": "default", "constraints": [{"contextName": "userId", **fields}]}


def test_an_unknown_operator_is_refused_naming_the_operator() -> None:
    with pytest.raises(ValidationError) as caught:
        Feature.model_validate(feature(strategies=[constraint(operator="LIKE", values=["x"])]))
    assert locations(caught.value) == ["strategies.0.constraints.0.operator"]
    assert "unknown operator 'LIKE'" in str(caught.value)


def test_an_unknown_strategy_is_refused_naming_it() -> None:
    with pytest.raises(ValidationError) as caught:
        Feature.model_validate(feature(strategies=[{"name": "myCustomStrategy"}]))
    assert locations(caught.value) == ["strategies.0.name"]


def test_a_regex_re2_cannot_compile_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        Feature.model_validate(feature(strategies=[constraint(operator="REGEX", value="^(?=a)b$")]))
    assert locations(caught.value) == ["strategies.0.constraints.0"]
    assert "value '^(?=a)b$' is not a regular expression RE2 accepts" in str(caught.value)


@pytest.mark.parametrize(
    ("operator", "value", "problem"),
    [
        ("NUM_GT", "twelve", "is not a number"),
        ("NUM_EQ", "1_000", "is not a number"),
        ("DATE_AFTER", "2024-01-01T00:00:00", "time zone"),
        ("SEMVER_GT", "v1.2.3", "semantic version"),
    ],
)
def test_unparsable_values_are_refused(operator: str, value: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        Feature.model_validate(feature(strategies=[constraint(operator=operator, value=value)]))


def test_a_single_value_operator_needs_a_value() -> None:
    with pytest.raises(ValidationError, match="NUM_LT needs a value"):
        Feature.model_validate(feature(strategies=[constraint(operator="NUM_LT", values=["3"])]))


def test_a_cidr_list_with_a_bad_entry_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"'10\.0\.0\.300'"):
        Feature.model_validate(feature(strategies=[constraint(operator="IN_CIDR", values=["10.0.0.300"])]))


def test_variant_weights_that_do_not_sum_to_1000_are_refused() -> None:
    variants = [{"name": "a", "weight": 500}, {"name": "b", "weight": 400}]
    with pytest.raises(ValidationError) as caught:
        Feature.model_validate(feature(variants=variants))
    assert locations(caught.value) == ["variants"]
    assert "sum to 1000 (got 900)" in str(caught.value)


def test_strategy_variant_weights_are_checked_too() -> None:
    strategy = {"name": "default", "variants": [{"name": "a", "weight": 1}]}
    with pytest.raises(ValidationError) as caught:
        Feature.model_validate(feature(strategies=[strategy]))
    assert locations(caught.value) == ["strategies.0.variants"]


def test_ten_thousand_constraints_are_refused_before_being_parsed() -> None:
    many = [{"contextName": "userId", "operator": "IN", "values": [str(i)]} for i in range(10_000)]
    started = time.perf_counter()
    with pytest.raises(ValidationError) as caught:
        Feature.model_validate(feature(strategies=[{"name": "default", "constraints": many}]))
    assert locations(caught.value) == ["strategies.0.constraints"]
    assert "at most 30 constraints (got 10000)" in str(caught.value)
    assert time.perf_counter() - started < 5  # refused up front, not after validating 10 000 items


@pytest.mark.parametrize("rollout", ["101", "-1", "50.5", "half"])
def test_a_rollout_must_be_a_whole_percentage(rollout: str) -> None:
    strategy = {"name": "flexibleRollout", "parameters": {"rollout": rollout}}
    with pytest.raises(ValidationError, match=r"parameters\.rollout"):
        Feature.model_validate(feature(strategies=[strategy]))


def test_a_json_payload_must_be_json() -> None:
    variants = [{"name": "a", "weight": 1000, "payload": {"type": "json", "value": "{nope"}}]
    with pytest.raises(ValidationError) as caught:
        Feature.model_validate(feature(variants=variants))
    assert locations(caught.value) == ["variants.0.payload"]


@pytest.mark.parametrize("key", ["", "has space", "a/b", "tab\there", "x" * 201])
def test_a_flag_key_is_url_and_log_safe(key: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Feature.model_validate(feature(name=key))
    assert locations(caught.value) == ["name"]


def test_a_feature_cannot_depend_on_itself() -> None:
    with pytest.raises(ValidationError, match="depend on itself"):
        Feature.model_validate(feature(dependencies=[{"feature": "streaming"}]))


def test_a_set_refuses_dependencies_on_missing_or_dependent_parents() -> None:
    parent = feature(name="parent")
    child = feature(name="child", dependencies=[{"feature": "parent"}])
    grandchild = feature(name="grandchild", dependencies=[{"feature": "child"}])
    assert len(FeatureSet.model_validate({"features": [parent, child]}).features) == 2
    with pytest.raises(ValidationError, match="no feature 'parent'"):
        FeatureSet.model_validate({"features": [child]})
    with pytest.raises(ValidationError, match="only one level"):
        FeatureSet.model_validate({"features": [parent, child, grandchild]})


def test_a_set_refuses_a_name_twice_and_a_missing_segment() -> None:
    with pytest.raises(ValidationError, match="appears twice"):
        FeatureSet.model_validate({"features": [feature(), feature()]})
    with pytest.raises(ValidationError, match="no segment 7"):
        FeatureSet.model_validate({"features": [feature(strategies=[{"name": "default", "segments": [7]}])]})


def test_the_client_api_mode_keeps_what_it_cannot_evaluate_and_evaluates_it_false() -> None:
    document = {
        "features": [
            feature(name="odd", strategies=[constraint(operator="LIKE", values=["x"])]),
            feature(name="custom", strategies=[{"name": "myCustomStrategy"}]),
            feature(name="weights", variants=[{"name": "a", "weight": 1}]),
        ]
    }
    snapshot = Snapshot(FeatureSet.from_unleash(document))
    assert not snapshot.is_enabled("odd", {"userId": "x"})
    assert not snapshot.is_enabled("custom", {})
    assert snapshot.variant("weights", {"userId": "1"}).name == "a"


def test_a_simple_flag_refuses_a_rollout_over_100_naming_it() -> None:
    with pytest.raises(ValidationError) as caught:
        Flag(key="x", rollout_percentage=101)
    assert locations(caught.value) == ["rollout_percentage"]


def test_definitions_round_trip_through_the_unleash_json_shape() -> None:
    original = Feature.model_validate(
        feature(
            strategies=[
                {
                    "name": "flexibleRollout",
                    "parameters": {"rollout": "40", "stickiness": "tenant_id", "groupId": "g"},
                    "constraints": [
                        {"contextName": "model", "operator": "STR_STARTS_WITH", "values": ["gpt-"]}
                    ],
                    "variants": [
                        {"name": "fast", "weight": 1000, "payload": {"type": "string", "value": "f"}}
                    ],
                }
            ]
        )
    )
    dumped = original.unleash()
    assert dumped["strategies"][0]["constraints"][0]["contextName"] == "model"
    assert Feature.model_validate(dumped) == original
