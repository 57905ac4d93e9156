"""The migration: upgrades and downgrades on both databases, with its own version table."""

from __future__ import annotations

import sqlalchemy as sa

from llmproxy.core import create_engine, current_revisions, discover_migrations, downgrade, upgrade


def test_the_metering_migration_is_discovered_and_upgrades_and_downgrades(empty_database_url: str) -> None:
    assert "metering" in discover_migrations()
    upgrade(empty_database_url)
    assert current_revisions(empty_database_url).get("metering") == "metering_0001"
    engine = create_engine(empty_database_url)
    with engine.connect() as conn:
        names = set(
            sa.inspect(conn).get_table_names(schema=None if conn.dialect.name == "sqlite" else "metering")
        )
    assert {"usage_hourly", "flush_state", "price_overrides"} <= names
    downgrade(empty_database_url, "metering", "base")
    with engine.connect() as conn:
        names = set(
            sa.inspect(conn).get_table_names(schema=None if conn.dialect.name == "sqlite" else "metering")
        )
    assert "usage_hourly" not in names
    engine.dispose()
