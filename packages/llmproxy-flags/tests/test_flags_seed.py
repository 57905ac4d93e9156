"""The seed's simple flag: its evaluation order as a table, and its rollout's properties."""

from __future__ import annotations

import random
import uuid

import mmh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmproxy.flags import Flag, FlagContext, Snapshot

KEY = "llm_gateway"
LISTED = "11111111-1111-1111-1111-111111111111"


def seed_bucket(key: str, tenant: str) -> int:
    """The seed's consistent hash, written independently: murmur3 x86_32, seed 0, of "key:tenant", mod 100."""
    return mmh3.hash(f"{key}:{tenant}".encode(), 0, signed=False) % 100


def tenant_in_bucket(wanted: range) -> str:
    for i in range(10_000):
        tenant = str(uuid.UUID(int=i + 1))
        if seed_bucket(KEY, tenant) in wanted:
            return tenant
    raise AssertionError("no tenant found")


LOW = tenant_in_bucket(range(0, 50))  # admitted by a 50 % rollout
HIGH = tenant_in_bucket(range(50, 100))  # not admitted by a 50 % rollout


def enabled(flag: Flag, tenant: str | None) -> bool:
    return Snapshot.of([flag]).is_enabled(flag.key, FlagContext(tenant_id=tenant).values)


@pytest.mark.parametrize(
    ("globally_enabled", "tenant", "rollout", "default", "expected"),
    [
        # 1. off globally: off, whatever else says on
        (False, LISTED, 100, True, False),
        (False, HIGH, 100, True, False),
        # 2. tenant on the allow-list: on, whatever the rollout and the default
        (True, LISTED, 0, False, True),
        (True, LISTED, 1, False, True),
        # 3. rollout > 0: the hash decides, the default is not consulted
        (True, LOW, 50, False, True),
        (True, HIGH, 50, False, False),
        (True, HIGH, 50, True, False),
        (True, HIGH, 100, False, True),
        # 4. otherwise the default
        (True, HIGH, 0, True, True),
        (True, HIGH, 0, False, False),
        # an anonymous request has no tenant to hash: a rollout never admits it; the default still applies
        (True, None, 100, True, False),
        (True, None, 0, True, True),
    ],
)
def test_the_seed_evaluation_order(
    globally_enabled: bool, tenant: str | None, rollout: int, default: bool, expected: bool
) -> None:
    flag = Flag(
        key=KEY,
        globally_enabled=globally_enabled,
        enabled_for_tenants={LISTED},
        rollout_percentage=rollout,
        default_value=default,
    )
    assert enabled(flag, tenant) is expected


def test_a_simple_flag_is_stored_as_the_general_model_and_read_back() -> None:
    flag = Flag(key=KEY, enabled_for_tenants={LISTED, uuid.UUID(int=7)}, rollout_percentage=30)
    feature = flag.to_feature()
    assert [s.name for s in feature.strategies] == ["default", "flexibleRollout"]
    assert feature.strategies[0].constraints[0].context_name == "tenant_id"
    assert feature.strategies[1].parameters == {"rollout": "30", "stickiness": "tenant_id", "groupId": KEY}
    assert Flag.from_feature(feature) == flag


def test_a_feature_of_another_shape_is_not_read_as_a_simple_flag() -> None:
    simple = Flag(key=KEY, default_value=True).to_feature()
    allow = simple.strategies[0]
    inverted = allow.model_copy(
        update={"constraints": (allow.constraints[0].model_copy(update={"inverted": True}),)}
    )
    assert Flag.from_feature(simple) is not None
    assert (
        Flag.from_feature(simple.model_copy(update={"strategies": (inverted, simple.strategies[1])})) is None
    )
    assert Flag.from_feature(simple.model_copy(update={"type": None})) is None


@settings(max_examples=25, deadline=None)
@given(percentage=st.integers(0, 100), seed=st.integers(0, 2**64))
def test_a_rollout_of_p_percent_admits_p_percent_of_random_tenants(percentage: int, seed: int) -> None:
    snapshot = Snapshot.of([Flag(key="rollout", rollout_percentage=percentage)])
    rng = random.Random(seed)
    tenants = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(10_000)]
    admitted = sum(snapshot.is_enabled("rollout", FlagContext(tenant_id=t).values) for t in tenants)
    assert abs(admitted / 100 - percentage) <= 2


@settings(max_examples=200, deadline=None)
@given(tenant=st.uuids(), low=st.integers(0, 100), high=st.integers(0, 100))
def test_growing_a_rollout_never_turns_a_tenant_off(tenant: uuid.UUID, low: int, high: int) -> None:
    low, high = min(low, high), max(low, high)
    values = FlagContext(tenant_id=tenant).values
    before = Snapshot.of([Flag(key="grow", rollout_percentage=low)]).is_enabled("grow", values)
    after = Snapshot.of([Flag(key="grow", rollout_percentage=high)]).is_enabled("grow", values)
    assert after or not before
    assert before is (seed_bucket("grow", str(tenant)) < low)
