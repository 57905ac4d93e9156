"""The auth migration upgrades and downgrades on SQLite and PostgreSQL, with its own version table."""

from __future__ import annotations

import sqlalchemy as sa

from llmproxy.core import create_engine, current_revisions, downgrade, upgrade


def test_auth_migration_creates_and_drops_the_api_keys_table(empty_database_url: str) -> None:
    upgrade(empty_database_url, only=["auth"])
    assert current_revisions(empty_database_url)["auth"] == "auth_0001"
    engine = create_engine(empty_database_url)
    schema = None if engine.dialect.name == "sqlite" else "auth"
    assert sa.inspect(engine).has_table("api_keys", schema=schema)

    downgrade(empty_database_url, "auth")

    assert not sa.inspect(engine).has_table("api_keys", schema=schema)
    assert current_revisions(empty_database_url)["auth"] is None
    engine.dispose()
