"""Model limits, spend budgets and key policies in the repository: exact round trips, sets replaced whole,
cascades, few queries, and bad input refused with nothing written — sync and async, SQLite and PostgreSQL."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pydantic
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from llmproxy.core import AsyncTenantRegistry, TenantRegistry
from llmproxy.ratelimit_config import (
    MAX_ENTRIES,
    MAX_LIMIT,
    NO_BUDGETS,
    ApiKeyPolicy,
    AsyncRateLimitConfigRepository,
    Budget,
    Budgets,
    ModelLimit,
    RateLimitConfigRepository,
    TenantRateLimitConfiguration,
    api_key_model_allowlists_table,
    configurations_table,
    endpoint_limits_table,
    model_limits_table,
    spend_budgets_table,
)

ConfigFactory = Callable[..., TenantRateLimitConfiguration]

CHILD_TABLES = (
    endpoint_limits_table,
    model_limits_table,
    spend_budgets_table,
    api_key_model_allowlists_table,
)


def rows(engine: Engine, table: sa.Table) -> list[sa.Row[Any]]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(table)))


def row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in (configurations_table, *CHILD_TABLES)
        }


@pytest.fixture
def repo(engine: Engine) -> RateLimitConfigRepository:
    return RateLimitConfigRepository(engine)


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement ``engine`` runs while the test does."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(engine, "before_cursor_execute", record)


# -- round trips


def test_model_limits_budgets_and_key_policies_round_trip_exactly(
    repo: RateLimitConfigRepository, tenant_id: uuid.UUID, make_config: ConfigFactory
) -> None:
    config = make_config(tenant_id).model_copy(
        update={
            "model_limits": {
                "gpt-4o": ModelLimit(requests_per_minute=MAX_LIMIT, tokens_per_minute=0, tokens_per_day=None),
                "m" * 200: ModelLimit(tokens_per_day=7),
                "claude-3.5/sonnet@2024": ModelLimit(),
            }
        }
    )

    assert repo.upsert(config) == config

    stored = repo.get_by_tenant_id(tenant_id)
    assert stored is not None
    assert stored == config
    assert stored.model_limits["gpt-4o"].tokens_per_day is None
    assert stored.budgets.day == Budget(
        limit_micros=50_000_000, soft_threshold_percent=90, utc_offset_hours=-5
    )


def test_an_empty_allow_list_round_trips_as_empty_and_differs_from_none(
    repo: RateLimitConfigRepository, tenant_id: uuid.UUID, make_config: ConfigFactory
) -> None:
    repo.upsert(make_config(tenant_id))

    stored = repo.get_by_tenant_id(tenant_id)

    assert stored is not None
    assert stored.api_keys["key-locked"].allowed_models == frozenset()
    assert not stored.api_keys["key-locked"].allows("gpt-4o")
    assert stored.api_keys["key-spend"].allowed_models is None
    assert stored.api_keys["key-spend"].allows("gpt-4o")


def test_each_key_policy_stores_only_what_it_says(
    engine: Engine, repo: RateLimitConfigRepository, tenant_id: uuid.UUID, make_config: ConfigFactory
) -> None:
    repo.upsert(make_config(tenant_id, scale=1))

    allowlists = {r.api_key_id: r.models for r in rows(engine, api_key_model_allowlists_table)}
    budgets = {(r.api_key_id, r.period): r.limit_micros for r in rows(engine, spend_budgets_table)}
    # key-spend has budgets and no allow-list: budget rows only; key-locked's empty list is stored as [].
    assert allowlists == {"key-batch": ["gpt-4o-mini"], "key-locked": []}
    assert budgets == {
        ("", "day"): 5_000_000,
        ("", "month"): 100_000_000,
        ("key-batch", "day"): 1,
        ("key-spend", "month"): 0,
    }


def test_a_key_policy_that_restricts_nothing_is_dropped_and_stores_nothing(
    engine: Engine, repo: RateLimitConfigRepository, tenant_id: uuid.UUID, make_config: ConfigFactory
) -> None:
    data = make_config(tenant_id).model_dump()
    data["api_keys"] = {"key-free": {}, "key-also-free": {"allowed_models": None, "budgets": {"day": None}}}

    config = TenantRateLimitConfiguration.model_validate(data)
    repo.upsert(config)

    assert config.api_keys == {}
    assert repo.get_by_tenant_id(tenant_id) == config
    assert rows(engine, api_key_model_allowlists_table) == []
    assert {r.api_key_id for r in rows(engine, spend_budgets_table)} == {""}


async def test_the_async_repository_round_trips_the_same_and_reads_what_sync_wrote(
    async_engine: AsyncEngine, engine: Engine, make_config: ConfigFactory
) -> None:
    tenant = await AsyncTenantRegistry(async_engine).create("async-policies")
    async_repo = AsyncRateLimitConfigRepository(async_engine)
    sync_repo = RateLimitConfigRepository(engine)
    first, second = make_config(tenant.id, scale=2), make_config(tenant.id, scale=3)

    await async_repo.upsert(first)
    assert await async_repo.get_by_tenant_id(tenant.id) == first
    assert sync_repo.get_by_tenant_id(tenant.id) == first

    sync_repo.upsert(second)
    assert await async_repo.get_by_tenant_id(tenant.id) == second
    assert await async_repo.list() == [second]


# -- replaced as sets


def test_upsert_replaces_model_limits_budgets_and_allow_lists_as_sets(
    engine: Engine, repo: RateLimitConfigRepository, tenant_id: uuid.UUID, make_config: ConfigFactory
) -> None:
    repo.upsert(make_config(tenant_id))
    updated = make_config(tenant_id, scale=2).model_copy(
        update={
            "model_limits": {"o1": ModelLimit(requests_per_minute=1)},
            "budgets": Budgets(month=Budget(limit_micros=9)),
            "api_keys": {"key-new": ApiKeyPolicy(allowed_models=frozenset({"o1", "gpt-4o"}))},
        }
    )

    repo.upsert(updated)

    assert repo.get_by_tenant_id(tenant_id) == updated
    counts = row_counts(engine)
    assert (counts["model_limits"], counts["spend_budgets"], counts["api_key_model_allowlists"]) == (1, 1, 1)


def test_upsert_without_the_new_sets_removes_their_rows(
    engine: Engine, repo: RateLimitConfigRepository, tenant_id: uuid.UUID, make_config: ConfigFactory
) -> None:
    repo.upsert(make_config(tenant_id))
    bare = make_config(tenant_id).model_copy(
        update={"model_limits": {}, "budgets": NO_BUDGETS, "api_keys": {}}
    )

    repo.upsert(bare)

    assert repo.get_by_tenant_id(tenant_id) == bare
    counts = row_counts(engine)
    assert (counts["model_limits"], counts["spend_budgets"], counts["api_key_model_allowlists"]) == (0, 0, 0)


def test_the_sets_of_one_tenant_leave_another_tenants_alone(
    engine: Engine, repo: RateLimitConfigRepository, make_config: ConfigFactory
) -> None:
    registry = TenantRegistry(engine)
    a, b = registry.create("a").id, registry.create("b").id
    repo.upsert(make_config(a))
    repo.upsert(make_config(b, scale=3))

    repo.upsert(make_config(a).model_copy(update={"model_limits": {}, "api_keys": {}}))

    assert repo.get_by_tenant_id(b) == make_config(b, scale=3)


@pytest.mark.parametrize("first_write", [True, False], ids=["first-write", "rewrite"])
def test_concurrent_upserts_of_one_tenant_leave_exactly_one_of_them_whole(
    engine: Engine,
    repo: RateLimitConfigRepository,
    tenant_id: uuid.UUID,
    make_config: ConfigFactory,
    first_write: bool,
) -> None:
    if not first_write:
        repo.upsert(make_config(tenant_id, scale=1))
    configs = [
        make_config(tenant_id, scale=s).model_copy(
            update={"model_limits": {f"model-{s}-{i}": ModelLimit(tokens_per_day=i) for i in range(s)}}
        )
        for s in range(2, 8)
    ]

    with ThreadPoolExecutor(len(configs)) as pool:
        list(pool.map(repo.upsert, configs))  # re-raises any writer's error

    stored = repo.get_by_tenant_id(tenant_id)
    assert stored in configs  # one writer's sets, not a mix of two
    assert stored is not None
    assert row_counts(engine)["model_limits"] == len(stored.model_limits)


# -- cascades


def test_deleting_the_tenant_deletes_every_child_row(
    engine: Engine, repo: RateLimitConfigRepository, tenant_id: uuid.UUID, make_config: ConfigFactory
) -> None:
    repo.upsert(make_config(tenant_id))
    assert all(n > 0 for n in row_counts(engine).values())

    TenantRegistry(engine).delete(tenant_id)

    assert set(row_counts(engine).values()) == {0}


def test_deleting_the_configuration_deletes_every_child_row(
    engine: Engine, repo: RateLimitConfigRepository, tenant_id: uuid.UUID, make_config: ConfigFactory
) -> None:
    repo.upsert(make_config(tenant_id))

    assert repo.delete(tenant_id) is True

    assert set(row_counts(engine).values()) == {0}
    assert TenantRegistry(engine).exists(tenant_id)


# -- queries


def test_get_costs_one_query_per_table(
    repo: RateLimitConfigRepository, tenant_id: uuid.UUID, make_config: ConfigFactory, statements: list[str]
) -> None:
    repo.upsert(make_config(tenant_id))
    statements.clear()

    repo.get_by_tenant_id(tenant_id)

    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1 + len(CHILD_TABLES)


def test_a_page_of_configurations_costs_one_query_per_table_not_per_row(
    engine: Engine, repo: RateLimitConfigRepository, make_config: ConfigFactory, statements: list[str]
) -> None:
    registry = TenantRegistry(engine)
    configs = [make_config(registry.create(f"page-{i}").id, scale=i + 1) for i in range(6)]
    for config in configs:
        repo.upsert(config)
    statements.clear()

    page = repo.list(limit=10)

    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1 + len(CHILD_TABLES)
    assert sorted(page, key=lambda c: str(c.tenant_id)) == sorted(configs, key=lambda c: str(c.tenant_id))


# -- bad input: refused naming the field, nothing written


def _too_many_models() -> dict[str, dict[str, int]]:
    return {f"model-{i}": {"requests_per_minute": 1} for i in range(MAX_ENTRIES + 1)}


BAD_INPUT: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("negative budget", lambda d: d["budgets"].update(day={"limit_micros": -1}), "budgets.day.limit_micros"),
    ("unknown currency", lambda d: d["budgets"]["month"].update(currency="EUR"), "budgets.month.currency"),
    (
        "unknown budget field",
        lambda d: d["budgets"].update(day={"limit_micros": 1, "colour": 1}),
        "budgets.day.colour",
    ),
    (
        "key budget over 64 bits",
        lambda d: d["api_keys"]["key-batch"]["budgets"].update(day={"limit_micros": MAX_LIMIT + 1}),
        "api_keys.key-batch.budgets.day.limit_micros",
    ),
    (
        "soft threshold out of range",
        lambda d: d["budgets"]["day"].update(soft_threshold_percent=0),
        "budgets.day.soft_threshold_percent",
    ),
    (
        "utc offset out of range",
        lambda d: d["budgets"]["day"].update(utc_offset_hours=15),
        "utc_offset_hours",
    ),
    ("10 kB model name", lambda d: d["model_limits"].update({"m" * 10_240: {}}), "model_limits"),
    ("model name with a space", lambda d: d["model_limits"].update({"gpt 4o": {}}), "model_limits"),
    (
        "negative model limit",
        lambda d: d["model_limits"]["gpt-4o"].update(tokens_per_minute=-1),
        "model_limits.gpt-4o.tokens_per_minute",
    ),
    (
        "unknown model limit field",
        lambda d: d["model_limits"]["gpt-4o"].update(rpm=1),
        "model_limits.gpt-4o.rpm",
    ),
    ("too many model limits", lambda d: d.update(model_limits=_too_many_models()), "model_limits"),
    (
        "too many key policies",
        lambda d: d.update(api_keys={f"k{i}": {"allowed_models": []} for i in range(MAX_ENTRIES + 1)}),
        "api_keys",
    ),
    (
        "too many allowed models",
        lambda d: d["api_keys"]["key-batch"].update(allowed_models=[f"m{i}" for i in range(MAX_ENTRIES + 1)]),
        "api_keys.key-batch.allowed_models",
    ),
    ("empty key id", lambda d: d["api_keys"].update({"": {"allowed_models": []}}), "api_keys"),
    (
        "10 kB allowed model name",
        lambda d: d["api_keys"]["key-batch"].update(allowed_models=["m" * 10_240]),
        "api_keys.key-batch.allowed_models",
    ),
]


@pytest.mark.parametrize(
    ("change", "field"), [(c, f) for _, c, f in BAD_INPUT], ids=[n for n, _, _ in BAD_INPUT]
)
def test_bad_input_is_refused_naming_the_field_and_the_database_keeps_what_it_held(
    engine: Engine,
    repo: RateLimitConfigRepository,
    tenant_id: uuid.UUID,
    make_config: ConfigFactory,
    change: Callable[[dict[str, Any]], None],
    field: str,
) -> None:
    held = make_config(tenant_id)
    repo.upsert(held)
    before = row_counts(engine)
    data = make_config(tenant_id, scale=2).model_dump(mode="json")
    change(data)

    with pytest.raises(pydantic.ValidationError) as refused:
        repo.upsert(TenantRateLimitConfiguration.model_validate(data))

    assert field in str(refused.value)
    assert repo.get_by_tenant_id(tenant_id) == held
    assert row_counts(engine) == before


def test_a_config_that_skipped_validation_is_refused_by_upsert_and_nothing_is_written(
    engine: Engine, repo: RateLimitConfigRepository, tenant_id: uuid.UUID, make_config: ConfigFactory
) -> None:
    held = make_config(tenant_id)
    repo.upsert(held)
    before = row_counts(engine)
    # model_copy(update=...) and model_construct do not validate: the repository does, before writing.
    unchecked = make_config(tenant_id, scale=2).model_copy(
        update={"budgets": Budgets.model_construct(day=Budget.model_construct(limit_micros=-5))}
    )

    with pytest.raises(pydantic.ValidationError, match=re.escape("budgets.day.limit_micros")):
        repo.upsert(unchecked)

    assert repo.get_by_tenant_id(tenant_id) == held
    assert row_counts(engine) == before


async def test_the_async_repository_refuses_a_config_that_skipped_validation(
    async_engine: AsyncEngine, make_config: ConfigFactory
) -> None:
    tenant = await AsyncTenantRegistry(async_engine).create("async-unchecked")
    repo = AsyncRateLimitConfigRepository(async_engine)
    unchecked = make_config(tenant.id).model_copy(
        update={"model_limits": {"gpt-4o": ModelLimit.model_construct(requests_per_minute=-1)}}
    )

    with pytest.raises(pydantic.ValidationError, match=re.escape("model_limits.gpt-4o.requests_per_minute")):
        await repo.upsert(unchecked)

    assert await repo.get_by_tenant_id(tenant.id) is None
