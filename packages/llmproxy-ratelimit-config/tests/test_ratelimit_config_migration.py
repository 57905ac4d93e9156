"""The Alembic migration, up and down, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from llmproxy.core import TenantRegistry, create_engine, current_revisions, downgrade, is_sqlite, upgrade
from llmproxy.ratelimit_config import DEFAULTS, RateLimitConfigRepository

TABLES = {"tenant_ratelimit_configurations", "endpoint_limits"}


@pytest.fixture
def engine(empty_database_url: str) -> Iterator[Engine]:
    engine = create_engine(empty_database_url)
    yield engine
    engine.dispose()


def schema_of(engine: Engine) -> str | None:
    return None if is_sqlite(engine.url) else "configuration"


def tables(engine: Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names(schema=schema_of(engine))) & TABLES


def test_upgrade_creates_both_tables_with_their_unique_indexes(engine: Engine) -> None:
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
    assert current_revisions(engine)["ratelimit_config"] == "ratelimit_config_0001"


def test_upgrade_creates_cascading_foreign_keys(engine: Engine) -> None:
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
