"""The migration runner: every installed package, dependency order, up and down, on PostgreSQL and SQLite."""

from __future__ import annotations

import multiprocessing
import uuid

import pytest
import sqlalchemy as sa

from llmproxy.core import (
    MigrationError,
    MigrationPackage,
    TenantRegistry,
    create_engine,
    current_revisions,
    discover_migrations,
    downgrade,
    upgrade,
)
from llmproxy.core._cli import main as cli
from llmproxy.core._migrations import dependency_order


def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        inspector = sa.inspect(engine)
        if engine.dialect.name == "postgresql":
            return {
                f"{schema}.{name}"
                for schema in inspector.get_schema_names()
                for name in inspector.get_table_names(schema=schema)
            }
        return set(inspector.get_table_names())
    finally:
        engine.dispose()


def test_core_is_discovered_through_its_entry_point() -> None:
    assert discover_migrations()["core"].version_table == "llmproxy_core_alembic_version"


def test_dependency_order_puts_dependencies_first() -> None:
    pkgs = {
        "quota": MigrationPackage("quota", "x:y", "v_quota", ("ratelimit_config", "core")),
        "ratelimit_config": MigrationPackage("ratelimit_config", "x:y", "v_rl", ("core",)),
        "core": MigrationPackage("core", "x:y", "v_core"),
        "auth": MigrationPackage("auth", "x:y", "v_auth", ("core",)),
    }
    assert [p.name for p in dependency_order(pkgs)] == ["core", "auth", "ratelimit_config", "quota"]


def test_dependency_cycles_and_missing_packages_are_named() -> None:
    cyclic = {
        "a": MigrationPackage("a", "x:y", "v_a", ("b",)),
        "b": MigrationPackage("b", "x:y", "v_b", ("a",)),
    }
    with pytest.raises(MigrationError, match="cycle: a -> b -> a"):
        dependency_order(cyclic)
    with pytest.raises(MigrationError, match="needs migrations of 'core'"):
        dependency_order({"a": MigrationPackage("a", "x:y", "v_a", ("core",))})


def test_upgrade_migrates_every_installed_package_core_first(empty_database_url: str) -> None:
    done = upgrade(empty_database_url)
    assert done[0] == "core"
    assert set(done) == set(discover_migrations())
    revisions = current_revisions(empty_database_url)
    assert revisions["core"] == "core_0001"
    assert all(revisions.values())
    assert any(name.endswith("tenants") for name in table_names(empty_database_url))


def test_upgrade_twice_is_harmless(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    before = current_revisions(empty_database_url)
    upgrade(empty_database_url)
    assert current_revisions(empty_database_url) == before


def test_only_migrates_a_package_and_what_it_needs(empty_database_url: str) -> None:
    assert upgrade(empty_database_url, only=["core"]) == ["core"]
    with pytest.raises(MigrationError, match="no migrations installed for: nope"):
        upgrade(empty_database_url, only=["nope"])


def test_downgrading_core_to_base_downgrades_its_dependents_first(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    undone = downgrade(empty_database_url, "core")
    assert undone[-1] == "core"
    assert set(undone) == set(discover_migrations())
    assert set(current_revisions(empty_database_url).values()) == {None}
    assert not any(name.endswith("tenants") for name in table_names(empty_database_url))


def test_cli_migrate_and_list(empty_database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["--database-url", empty_database_url, "migrate"]) == 0
    assert "migrated core" in capsys.readouterr().out
    assert cli(["--database-url", empty_database_url, "migrations"]) == 0
    assert "core_0001" in capsys.readouterr().out


def test_cli_reports_an_unknown_package_without_a_trace(
    empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["--database-url", empty_database_url, "downgrade", "nope"]) == 2
    assert "no migrations installed for 'nope'" in capsys.readouterr().err


def test_two_processes_migrating_at_once_both_succeed(real_empty_database_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    # The target must be importable by name in a spawned child: the library function itself.
    procs = [ctx.Process(target=upgrade, args=(real_empty_database_url,)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert all(current_revisions(real_empty_database_url).values())


def test_tenant_delete_cascades_on_the_migrated_schema(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        registry = TenantRegistry(engine)
        tenant = registry.create(f"acme-{uuid.uuid4().hex[:6]}")
        assert registry.delete(tenant.id)
        assert not registry.exists(tenant.id)
    finally:
        engine.dispose()
