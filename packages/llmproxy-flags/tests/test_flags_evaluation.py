"""Evaluation behaviour beyond the client specification: contexts, strategy order, reasons, snapshots."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from llmproxy.core import RequestContext
from llmproxy.flags import (
    Constraint,
    Feature,
    FeatureSet,
    Flag,
    FlagContext,
    Payload,
    Segment,
    Snapshot,
    Strategy,
    Variant,
    bucket,
    request_values,
)

TENANT = uuid.UUID("7a1c1a40-8d1e-4a3c-9c62-0c5f1b7e2d11")


def constrained(name: str, *constraints: Constraint, **strategy: object) -> Feature:
    return Feature(name=name, strategies=(Strategy(name="default", constraints=constraints, **strategy),))


def test_a_request_context_gives_tenant_user_address_endpoint_and_model() -> None:
    ctx = RequestContext(
        tenant_id=str(TENANT),
        user_id="u1",
        api_key_id="k1",
        client_ip="10.0.0.5",
        endpoint="/v1/x",
        model="m",
    )
    assert request_values(ctx) == {
        "tenant_id": str(TENANT),
        "userId": "u1",
        "api_key_id": "k1",
        "remoteAddress": "10.0.0.5",
        "endpoint": "/v1/x",
        "model": "m",
    }
    assert FlagContext.from_request(ctx).values == request_values(ctx)


def test_a_uuid_tenant_is_compared_as_its_canonical_text() -> None:
    snapshot = Snapshot.of([Flag(key="f", enabled_for_tenants={TENANT})])
    assert snapshot.is_enabled("f", FlagContext(tenant_id=TENANT).values)
    assert snapshot.is_enabled("f", FlagContext(tenant_id=str(TENANT)).values)
    assert not snapshot.is_enabled("f", FlagContext(tenant_id=uuid.uuid4()).values)


def test_explicit_properties_join_the_context_and_fields_win_over_them() -> None:
    ctx = FlagContext(
        user_id="real", properties={"userId": "spoofed", "plan": "pro", "beta": True, "none": None}
    )
    assert ctx.values == {"userId": "real", "plan": "pro", "beta": "true"}


def test_an_unknown_flag_answers_the_callers_default() -> None:
    snapshot = Snapshot.empty()
    assert snapshot.is_enabled("missing", {}) is False
    assert snapshot.is_enabled("missing", {}, default=True) is True
    assert snapshot.variant("missing", {}).feature_enabled is False


def test_strategies_are_alternatives_and_constraints_all_must_hold() -> None:
    both = (
        Constraint(context_name="plan", operator="IN", values=("pro",)),
        Constraint(context_name="region", operator="IN", values=("eu",)),
    )
    feature = Feature(
        name="f",
        strategies=(
            Strategy(name="default", constraints=both),
            Strategy(name="userWithId", parameters={"userIds": "alice, bob"}),
        ),
    )
    snapshot = Snapshot.of([feature])
    assert snapshot.is_enabled("f", {"plan": "pro", "region": "eu"})
    assert not snapshot.is_enabled("f", {"plan": "pro", "region": "us"})
    assert snapshot.is_enabled("f", {"userId": "bob"})


def test_a_disabled_strategy_is_skipped() -> None:
    feature = Feature(name="f", strategies=(Strategy(name="default", disabled=True),))
    assert not Snapshot.of([feature]).is_enabled("f", {})


def test_a_rollout_on_a_custom_property_buckets_like_unleash() -> None:
    feature = Feature(
        name="f",
        strategies=(
            Strategy(
                name="flexibleRollout",
                parameters={"rollout": "30", "stickiness": "tenant_id", "groupId": "grp"},
            ),
        ),
    )
    snapshot = Snapshot.of([feature])
    for i in range(200):
        tenant = f"t{i}"
        assert snapshot.is_enabled("f", {"tenant_id": tenant}) is (bucket("grp", tenant) <= 30)
    assert not snapshot.is_enabled("f", {"userId": "x"})  # no tenant: nothing to hash, no random fallback


def test_the_first_matching_strategy_chooses_the_variant_strategy_variants_first() -> None:
    eu = Constraint(context_name="region", operator="IN", values=("eu",))
    feature = Feature(
        name="f",
        strategies=(
            Strategy(name="default", constraints=(eu,), variants=(Variant(name="eu-variant", weight=1000),)),
            Strategy(name="default"),
        ),
        variants=(Variant(name="feature-variant", weight=1000, payload=Payload(type="number", value="3")),),
    )
    snapshot = Snapshot.of([feature])
    assert snapshot.variant("f", {"region": "eu"}).name == "eu-variant"
    other = snapshot.variant("f", {"region": "us"})
    assert (other.name, other.payload) == ("feature-variant", Payload(type="number", value="3"))


def test_an_override_wins_over_the_weights() -> None:
    feature = Feature(
        name="f",
        variants=(
            Variant(name="a", weight=1000),
            Variant(name="b", weight=0, overrides=({"context_name": "userId", "values": ("vip",)},)),  # type: ignore[arg-type]
        ),
    )
    snapshot = Snapshot.of([feature])
    assert snapshot.variant("f", {"userId": "vip"}).name == "b"
    assert snapshot.variant("f", {"userId": "someone"}).name == "a"


def test_segments_add_their_constraints() -> None:
    segment = Segment(id=3, constraints=(Constraint(context_name="plan", operator="IN", values=("pro",)),))
    feature = Feature(name="f", strategies=(Strategy(name="default", segments=(3,)),))
    snapshot = Snapshot(FeatureSet(features=(feature,), segments=(segment,)))
    assert snapshot.is_enabled("f", {"plan": "pro"})
    assert not snapshot.is_enabled("f", {"plan": "free"})


def test_a_date_constraint_without_current_time_means_now() -> None:
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    after_past = constrained("a", Constraint(context_name="currentTime", operator="DATE_AFTER", value=past))
    after_future = constrained(
        "b", Constraint(context_name="currentTime", operator="DATE_AFTER", value=future)
    )
    snapshot = Snapshot.of([after_past, after_future])
    assert snapshot.is_enabled("a", {})
    assert not snapshot.is_enabled("b", {})
    assert snapshot.is_enabled("b", FlagContext(current_time=datetime.now(UTC) + timedelta(days=2)).values)


def test_application_hostname_is_read_once_for_the_snapshot() -> None:
    feature = Feature(
        name="f", strategies=(Strategy(name="applicationHostname", parameters={"hostNames": "Web-1"}),)
    )
    assert Snapshot.of([feature], hostname="web-1").is_enabled("f", {})
    assert not Snapshot.of([feature], hostname="web-2").is_enabled("f", {})


def test_the_reason_says_why() -> None:
    pro = Constraint(context_name="plan", operator="IN", values=("pro",))
    snapshot = Snapshot.of(
        [
            Feature(name="static"),
            Feature(name="off", enabled=False),
            constrained("targeted", pro),
            Flag(key="split", rollout_percentage=100),
            Feature(
                name="split-variants", variants=(Variant(name="a", weight=500), Variant(name="b", weight=500))
            ),
        ]
    )
    assert snapshot.explain("static", {}).reason == "STATIC"  # type: ignore[union-attr]
    assert snapshot.explain("off", {}).reason == "DISABLED"  # type: ignore[union-attr]
    assert snapshot.explain("targeted", {"plan": "pro"}).reason == "TARGETING_MATCH"  # type: ignore[union-attr]
    assert snapshot.explain("targeted", {"plan": "free"}).reason == "DEFAULT"  # type: ignore[union-attr]
    assert snapshot.explain("split", {"tenant_id": "t"}).reason == "STATIC"  # type: ignore[union-attr]
    assert snapshot.explain("split-variants", {"userId": "1"}).variant_reason == "SPLIT"  # type: ignore[union-attr]
    assert snapshot.explain("missing", {}) is None


def test_changed_names_added_removed_and_modified_flags_and_segment_users() -> None:
    uses_segment = Feature(name="seg-user", strategies=(Strategy(name="default", segments=(1,)),))
    seg = Segment(id=1, constraints=(Constraint(context_name="a", operator="IN", values=("1",)),))
    seg2 = Segment(id=1, constraints=(Constraint(context_name="a", operator="IN", values=("2",)),))
    before = Snapshot(
        FeatureSet(features=(Feature(name="same"), Feature(name="gone"), uses_segment), segments=(seg,))
    )
    after = Snapshot(
        FeatureSet(features=(Feature(name="same"), Feature(name="new"), uses_segment), segments=(seg2,))
    )
    assert before.changed(after) == ["gone", "new", "seg-user"]
    assert before.changed(before) == []
