"""The Alembic migrations, up and down, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from llmproxy.core import TenantRegistry, create_engine, current_revisions, downgrade, is_sqlite, upgrade
from llmproxy.ratelimit_config import (
    DEFAULTS,
    NO_BUDGETS,
    RateLimitConfigRepository,
    TenantRateLimitConfiguration,
    configurations_table,
    endpoint_limits_table,
    spend_budgets_table,
)

ConfigFactory = Callable[..., TenantRateLimitConfiguration]

TABLES_0001 = {"tenant_ratelimit_configurations", "endpoint_limits"}
TABLES_0002 = {"model_limits", "spend_budgets", "api_key_model_allowlists"}
TABLES = TABLES_0001 | TABLES_0002


@pytest.fixture
def engine(empty_database_url: str) -> Iterator[Engine]:
    engine = create_engine(empty_database_url)
    yield engine
    engine.dispose()


def schema_of(engine: Engine) -> str | None:
    return None if is_sqlite(engine.url) else "configuration"


def tables(engine: Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names(schema=schema_of(engine))) & TABLES


def reflected(conn: sa.Connection, name: str) -> sa.Table:
    return sa.Table(name, sa.MetaData(), schema=schema_of(conn.engine), autoload_with=conn)


def count(conn: sa.Connection, name: str) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(reflected(conn, name))).scalar_one())


def test_upgrade_creates_the_0001_tables_with_their_unique_indexes(engine: Engine) -> None:
    upgrade(engine)

    inspector = sa.inspect(engine)
    schema = schema_of(engine)
    assert tables(engine) == TABLES
    config_indexes = {
        i["name"]: i for i in inspector.get_indexes("tenant_ratelimit_configurations", schema=schema)
    }
    endpoint_indexes = {i["name"]: i for i in inspector.get_indexes("endpoint_limits", schema=schema)}
    assert config_indexes["ix_tenant_ratelimit_configurations_tenant_id"]["column_names"] == ["tenant_id"]
    assert config_indexes["ix_tenant_ratelimit_configurations_tenant_id"]["unique"]
    assert endpoint_indexes["ix_endpoint_limits_config_path"]["column_names"] == [
        "configuration_id",
        "endpoint_path",
    ]
    assert endpoint_indexes["ix_endpoint_limits_config_path"]["unique"]
    assert current_revisions(engine)["ratelimit_config"] == "ratelimit_config_0002"


def test_upgrade_creates_cascading_foreign_keys_of_the_0001_tables(engine: Engine) -> None:
    upgrade(engine)

    inspector = sa.inspect(engine)
    schema = schema_of(engine)
    (to_tenants,) = inspector.get_foreign_keys("tenant_ratelimit_configurations", schema=schema)
    (to_configs,) = inspector.get_foreign_keys("endpoint_limits", schema=schema)
    assert (to_tenants["referred_table"], to_tenants["constrained_columns"]) == ("tenants", ["tenant_id"])
    assert to_tenants["options"].get("ondelete") == "CASCADE"
    assert to_configs["referred_table"] == "tenant_ratelimit_configurations"
    assert to_configs["options"].get("ondelete") == "CASCADE"


def test_endpoint_paths_hold_500_characters(engine: Engine) -> None:
    upgrade(engine)

    columns = {
        c["name"]: c for c in sa.inspect(engine).get_columns("endpoint_limits", schema=schema_of(engine))
    }
    column_type = columns["endpoint_path"]["type"]
    assert isinstance(column_type, sa.String)
    assert column_type.length == 500


def test_upgrade_seeds_the_defaults_for_tenants_that_already_exist(engine: Engine) -> None:
    upgrade(engine, only=["core"])
    registry = TenantRegistry(engine)
    existing = [registry.create("early-1").id, registry.create("early-2").id]

    upgrade(engine)

    repo = RateLimitConfigRepository(engine)
    for tenant_id in existing:
        assert repo.get_by_tenant_id(tenant_id) == DEFAULTS.for_tenant(tenant_id)
    later = registry.create("later").id
    assert repo.get_by_tenant_id(later) is None


def test_deleting_a_seeded_tenant_cascades_to_its_rows(engine: Engine) -> None:
    upgrade(engine, only=["core"])
    tenant_id = TenantRegistry(engine).create("doomed").id
    upgrade(engine)

    TenantRegistry(engine).delete(tenant_id)

    with engine.connect() as conn:
        schema = schema_of(engine)
        configs = sa.Table(
            "tenant_ratelimit_configurations", sa.MetaData(), schema=schema, autoload_with=conn
        )
        endpoints = sa.Table("endpoint_limits", sa.MetaData(), schema=schema, autoload_with=conn)
        assert conn.execute(sa.select(sa.func.count()).select_from(configs)).scalar_one() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(endpoints)).scalar_one() == 0


def test_downgrade_removes_the_tables_and_keeps_the_tenants(engine: Engine) -> None:
    upgrade(engine)
    tenant_id = TenantRegistry(engine).create("stays").id

    downgrade(engine, "ratelimit_config")

    assert tables(engine) == set()
    assert current_revisions(engine)["ratelimit_config"] is None
    assert TenantRegistry(engine).exists(tenant_id)


def test_upgrade_after_downgrade_works_and_seeds_again(engine: Engine) -> None:
    upgrade(engine)
    tenant_id = TenantRegistry(engine).create("again").id
    downgrade(engine, "ratelimit_config")

    upgrade(engine)

    assert tables(engine) == TABLES
    assert RateLimitConfigRepository(engine).get_by_tenant_id(tenant_id) == DEFAULTS.for_tenant(tenant_id)


# -- 0002: model limits, spend budgets, allow-lists

CHILD_INDEXES = {
    "model_limits": ("ix_model_limits_config_model", ["configuration_id", "model"]),
    "spend_budgets": ("ix_spend_budgets_config_key_period", ["configuration_id", "api_key_id", "period"]),
    "api_key_model_allowlists": (
        "ix_api_key_model_allowlists_config_key",
        ["configuration_id", "api_key_id"],
    ),
}


@pytest.mark.parametrize("table", sorted(TABLES_0002))
def test_0002_creates_a_child_table_with_a_unique_index_and_a_cascading_foreign_key(
    engine: Engine, table: str
) -> None:
    upgrade(engine)

    inspector = sa.inspect(engine)
    schema = schema_of(engine)
    (index,) = inspector.get_indexes(table, schema=schema)
    (to_configs,) = inspector.get_foreign_keys(table, schema=schema)
    assert (index["name"], index["column_names"], bool(index["unique"])) == (*CHILD_INDEXES[table], True)
    assert to_configs["name"] == f"fk_{table}_configuration_id"
    assert (to_configs["referred_table"], to_configs["constrained_columns"]) == (
        "tenant_ratelimit_configurations",
        ["configuration_id"],
    )
    assert to_configs["options"].get("ondelete") == "CASCADE"


def test_0002_names_hold_200_characters_and_model_limits_may_be_null(engine: Engine) -> None:
    upgrade(engine)

    inspector = sa.inspect(engine)
    schema = schema_of(engine)
    columns = {
        (table, c["name"]): c for table in TABLES_0002 for c in inspector.get_columns(table, schema=schema)
    }
    for key in [
        ("model_limits", "model"),
        ("spend_budgets", "api_key_id"),
        ("api_key_model_allowlists", "api_key_id"),
    ]:
        column_type = columns[key]["type"]
        assert isinstance(column_type, sa.String), key
        assert column_type.length == 200, key
        assert not columns[key]["nullable"], key
    for name in ("requests_per_minute", "tokens_per_minute", "tokens_per_day"):
        assert columns[("model_limits", name)]["nullable"]
    assert not columns[("spend_budgets", "limit_micros")]["nullable"]


def budget_row(configuration_id: uuid.UUID, **values: Any) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "configuration_id": configuration_id,
        "api_key_id": "",
        "period": "day",
        "limit_micros": 1,
        "soft_threshold_percent": 80,
        "utc_offset_hours": 0,
        "currency": "USD",
        "created_at": datetime.now(UTC),
        **values,
    }


@pytest.mark.parametrize(
    "bad", [{"limit_micros": -1}, {"period": "week"}], ids=["negative-limit", "unknown-period"]
)
def test_0002_check_constraints_refuse_what_the_model_refuses_behind_its_back(
    engine: Engine, make_config: ConfigFactory, bad: dict[str, Any]
) -> None:
    upgrade(engine)
    tenant_id = TenantRegistry(engine).create("checked").id
    RateLimitConfigRepository(engine).upsert(make_config(tenant_id))
    with engine.connect() as conn:
        configuration_id = conn.execute(sa.select(configurations_table.c.id)).scalar_one()
        before = count(conn, "spend_budgets")

    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.insert(spend_budgets_table), budget_row(configuration_id, api_key_id="k", **bad))

    with engine.connect() as conn:
        assert count(conn, "spend_budgets") == before


def test_downgrade_of_0002_keeps_the_0001_tables_and_their_rows(
    engine: Engine, make_config: ConfigFactory
) -> None:
    upgrade(engine)
    tenant_id = TenantRegistry(engine).create("keeps").id
    config = make_config(tenant_id)
    RateLimitConfigRepository(engine).upsert(config)

    downgrade(engine, "ratelimit_config", "ratelimit_config_0001")

    assert current_revisions(engine)["ratelimit_config"] == "ratelimit_config_0001"
    assert tables(engine) == TABLES_0001
    with engine.connect() as conn:
        # the package's tables of 0001 are as 0001 made them
        (row,) = conn.execute(sa.select(configurations_table)).all()
        endpoints = conn.execute(sa.select(endpoint_limits_table)).all()
    assert (row.tenant_id, row.global_requests_per_minute) == (
        tenant_id,
        config.global_limit.requests_per_minute,
    )
    assert {e.endpoint_path for e in endpoints} == set(config.endpoint_limits)


def test_upgrade_after_downgrade_of_0002_serves_the_0001_data_without_the_new_sets(
    engine: Engine, make_config: ConfigFactory
) -> None:
    upgrade(engine)
    tenant_id = TenantRegistry(engine).create("round-trip").id
    config = make_config(tenant_id)
    repo = RateLimitConfigRepository(engine)
    repo.upsert(config)
    downgrade(engine, "ratelimit_config", "ratelimit_config_0001")

    upgrade(engine)

    assert tables(engine) == TABLES
    assert current_revisions(engine)["ratelimit_config"] == "ratelimit_config_0002"
    assert repo.get_by_tenant_id(tenant_id) == config.model_copy(
        update={"model_limits": {}, "budgets": NO_BUDGETS, "api_keys": {}}
    )
    repo.upsert(config)  # the new tables work again
    assert repo.get_by_tenant_id(tenant_id) == config


def test_down_to_base_and_up_again_with_rows_in_every_table(
    engine: Engine, make_config: ConfigFactory
) -> None:
    upgrade(engine)
    registry = TenantRegistry(engine)
    tenant_id = registry.create("full").id
    RateLimitConfigRepository(engine).upsert(make_config(tenant_id))
    with engine.connect() as conn:
        assert all(count(conn, table) > 0 for table in TABLES)

    downgrade(engine, "ratelimit_config")
    assert tables(engine) == set()
    upgrade(engine)

    assert tables(engine) == TABLES
    assert registry.exists(tenant_id)
    assert RateLimitConfigRepository(engine).get_by_tenant_id(tenant_id) == DEFAULTS.for_tenant(tenant_id)
