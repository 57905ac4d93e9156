"""The flag set in the database: versions, audit columns, consistency, nothing half-written."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from llmproxy.core import create_async_engine, create_engine
from llmproxy.flags import (
    AsyncFlagRepository,
    Constraint,
    Dependency,
    Feature,
    FeatureSet,
    Flag,
    FlagNotFound,
    FlagRepository,
    InvalidFlagSet,
    Segment,
    Strategy,
    Variant,
    VersionConflict,
)


@pytest.fixture
def repo(database_url: str) -> Iterator[FlagRepository]:
    engine = create_engine(database_url)
    yield FlagRepository(engine)
    engine.dispose()


def test_a_new_flag_is_version_1_and_bumps_the_set(repo: FlagRepository) -> None:
    before = repo.load().version
    stored, whole = repo.put(Flag(key="streaming", default_value=True), updated_by="alice")
    assert stored.version == 1
    assert stored.updated_by == "alice"
    assert whole.version == before + 1
    assert whole.token == repo.token()
    assert [f.key for f in whole.flags] == ["streaming"]


def test_replacing_a_flag_bumps_its_version_and_keeps_created_at(repo: FlagRepository) -> None:
    first, _ = repo.put(Flag(key="streaming"), updated_by="alice")
    second, _ = repo.put(Flag(key="streaming", rollout_percentage=10), updated_by="bob")
    stored = repo.get("streaming")
    assert stored is not None
    assert (second.version, stored.version) == (2, 2)
    assert stored.created_at == first.created_at
    assert stored.updated_at >= first.updated_at
    assert stored.updated_by == "bob"
    assert Flag.from_feature(stored.feature) == Flag(key="streaming", rollout_percentage=10)


def test_a_stale_expected_version_is_a_conflict_and_writes_nothing(repo: FlagRepository) -> None:
    repo.put(Flag(key="f"))
    token = repo.token()
    with pytest.raises(VersionConflict) as caught:
        repo.put(Flag(key="f", default_value=True), expected_version=0)
    assert (caught.value.expected, caught.value.actual) == (0, 1)
    assert repo.token() == token
    stored, _ = repo.put(Flag(key="f", default_value=True), expected_version=1)
    assert stored.version == 2


@pytest.mark.parametrize(
    "bad",
    [
        {
            "name": "x",
            "strategies": [{"name": "default", "constraints": [{"contextName": "a", "operator": "LIKE"}]}],
        },
        {"name": "x", "variants": [{"name": "a", "weight": 999}]},
        {
            "name": "x",
            "strategies": [
                {"name": "default", "constraints": [{"contextName": "a", "operator": "REGEX", "value": "("}]}
            ],
        },
        {
            "name": "x",
            "strategies": [
                {
                    "name": "default",
                    "constraints": [{"contextName": "a", "operator": "IN"} for _ in range(10_000)],
                }
            ],
        },
    ],
    ids=["unknown-operator", "weights-not-summing", "regex-not-compiling", "ten-thousand-constraints"],
)
def test_a_bad_definition_is_refused_and_nothing_is_written(
    repo: FlagRepository, bad: dict[str, object]
) -> None:
    token = repo.token()
    # Read as an Unleash SDK would (leniently), then written: the write validates it as a definition.
    lenient = FeatureSet.from_unleash({"features": [bad]}).features[0]
    with pytest.raises(ValidationError):
        repo.put(lenient)
    assert repo.token() == token
    assert repo.get("x") is None


def test_a_dependency_on_a_missing_flag_is_refused_after_the_lock_and_rolled_back(
    repo: FlagRepository,
) -> None:
    token = repo.token()
    child = Feature(name="child", dependencies=(Dependency(feature="parent"),))
    with pytest.raises(InvalidFlagSet, match="no feature 'parent'"):
        repo.put(child)
    assert repo.token() == token
    repo.put(Feature(name="parent"))
    repo.put(child)
    with pytest.raises(InvalidFlagSet, match="child"):
        repo.delete("parent")
    assert repo.get("parent") is not None


def test_delete_removes_the_flag_and_bumps_the_set(repo: FlagRepository) -> None:
    repo.put(Flag(key="gone"))
    version = repo.load().version
    whole = repo.delete("gone", updated_by="carol")
    assert whole.version == version + 1
    assert repo.get("gone") is None
    with pytest.raises(FlagNotFound):
        repo.delete("gone")


def test_segments_are_stored_and_a_used_one_cannot_be_deleted(repo: FlagRepository) -> None:
    repo.put_segment(
        Segment(id=1, constraints=(Constraint(context_name="plan", operator="IN", values=("pro",)),))
    )
    repo.put(Feature(name="uses", strategies=(Strategy(name="default", segments=(1,)),)))
    with pytest.raises(InvalidFlagSet, match="segment 1 is used by uses"):
        repo.delete_segment(1)
    with pytest.raises(InvalidFlagSet, match="no segment 2"):
        repo.put(Feature(name="missing", strategies=(Strategy(name="default", segments=(2,)),)))
    whole = repo.load()
    assert [s.segment.id for s in whole.segments] == [1]
    assert whole.feature_set().features[0].name == "uses"


def test_definitions_survive_the_round_trip_exactly(repo: FlagRepository) -> None:
    feature = Feature(
        name="rich",
        description="all the parts",
        strategies=(
            Strategy(
                name="flexibleRollout",
                parameters={"rollout": "25", "stickiness": "tenant_id", "groupId": "rich"},
                constraints=(
                    Constraint(
                        context_name="model",
                        operator="STR_STARTS_WITH",
                        values=("gpt-",),
                        case_insensitive=True,
                    ),
                ),
                variants=(Variant(name="s", weight=1000),),
            ),
        ),
        variants=(Variant(name="a", weight=600), Variant(name="b", weight=400)),
    )
    repo.put(feature)
    stored = repo.get("rich")
    assert stored is not None
    assert stored.feature == feature


async def test_the_async_repository_runs_the_same_sql(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        repo = AsyncFlagRepository(engine)
        stored, whole = await repo.put(Flag(key="a", default_value=True), updated_by="async")
        assert stored.version == 1
        assert (await repo.token()) == whole.token
        assert [f.key for f in await repo.list()] == ["a"]
        with pytest.raises(VersionConflict):
            await repo.put(Flag(key="a"), expected_version=7)
        await repo.delete("a")
        assert await repo.get("a") is None
    finally:
        await engine.dispose()
