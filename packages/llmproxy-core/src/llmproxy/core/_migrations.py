"""Per-package Alembic migrations, discovered through entry points and run in dependency order.

Each package registers a :class:`MigrationPackage` under the ``llmproxy.migrations`` entry-point group.
Its Alembic scripts keep their own version table, so a service migrates only what it installed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ._sql import create_engine, is_sqlite

ENTRY_POINT_GROUP = "llmproxy.migrations"
_LOCK_KEY = zlib.crc32(b"llmproxy.migrations")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class MigrationPackage:
    """One package's migrations: where its scripts are, its version table, what it must run after."""

    name: str
    script_location: str
    version_table: str
    depends_on: tuple[str, ...] = ()


CORE_MIGRATIONS = MigrationPackage(
    name="core",
    script_location="llmproxy.core:migrations",
    version_table="llmproxy_core_alembic_version",
)


def discover_migrations() -> dict[str, MigrationPackage]:
    """Every installed package's migrations, by name."""
    found: dict[str, MigrationPackage] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        pkg = ep.load()
        if not isinstance(pkg, MigrationPackage):
            raise MigrationError(f"entry point {ep.name!r} does not point at a MigrationPackage")
        found[pkg.name] = pkg
    return found


def dependency_order(packages: dict[str, MigrationPackage]) -> list[MigrationPackage]:
    """Topological order (dependencies first, then by name for a stable result)."""
    ordered: list[MigrationPackage] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise MigrationError("migration dependency cycle: " + " -> ".join((*chain, name)))
        if name not in packages:
            raise MigrationError(
                f"{chain[-1] if chain else '?'} needs migrations of {name!r}, which is not installed"
            )
        state[name] = "visiting"
        for dep in sorted(packages[name].depends_on):
            visit(dep, (*chain, name))
        state[name] = "done"
        ordered.append(packages[name])

    for name in sorted(packages):
        visit(name, ())
    return ordered


def _alembic_config(pkg: MigrationPackage, connection: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", pkg.script_location)
    cfg.attributes["connection"] = connection
    cfg.attributes["version_table"] = pkg.version_table
    return cfg


def _lock(connection: Connection) -> None:
    # Two processes starting at once must not both run the same DDL.
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})


def _engine(database: str | Engine) -> tuple[Engine, bool]:
    if isinstance(database, Engine):
        return database, False
    return create_engine(database), True


def upgrade(database: str | Engine, *, only: list[str] | None = None, revision: str = "head") -> list[str]:
    """Upgrade installed packages (or ``only`` these and what they need), dependencies first."""
    from alembic import command

    available = discover_migrations()
    if only:
        unknown = sorted(set(only) - set(available))
        if unknown:
            raise MigrationError(f"no migrations installed for: {', '.join(unknown)}")
        wanted: set[str] = set()

        def need(name: str) -> None:
            if name not in wanted:
                wanted.add(name)
                for dep in available[name].depends_on:
                    need(dep)

        for name in only:
            need(name)
        available = {k: v for k, v in available.items() if k in wanted}
    engine, owned = _engine(database)
    done = []
    try:
        for pkg in dependency_order(available):
            with engine.begin() as conn:
                _lock(conn)
                command.upgrade(_alembic_config(pkg, conn), revision)
            done.append(pkg.name)
    finally:
        if owned:
            engine.dispose()
    return done


def downgrade(database: str | Engine, package: str, revision: str = "base") -> list[str]:
    """Downgrade one package; to ``base`` it first downgrades every installed package depending on it."""
    from alembic import command

    available = discover_migrations()
    if package not in available:
        raise MigrationError(f"no migrations installed for {package!r}")
    order = dependency_order(available)
    targets = [package]
    if revision == "base":
        dependents = {package}
        for pkg in order:
            if dependents & set(pkg.depends_on):
                dependents.add(pkg.name)
        targets = [p.name for p in reversed(order) if p.name in dependents]
    engine, owned = _engine(database)
    try:
        for name in targets:
            with engine.begin() as conn:
                _lock(conn)
                command.downgrade(
                    _alembic_config(available[name], conn), revision if name == package else "base"
                )
    finally:
        if owned:
            engine.dispose()
    return targets


def current_revisions(database: str | Engine) -> dict[str, str | None]:
    """The applied revision of every installed package (None when never migrated)."""
    from alembic.runtime.migration import MigrationContext

    engine, owned = _engine(database)
    try:
        result: dict[str, str | None] = {}
        with engine.connect() as conn:
            for pkg in dependency_order(discover_migrations()):
                ctx = MigrationContext.configure(conn, opts={"version_table": pkg.version_table})
                result[pkg.name] = ctx.get_current_revision()
        return result
    finally:
        if owned:
            engine.dispose()


def run_alembic_env() -> None:
    """The body of every llmproxy package's Alembic ``env.py``."""
    from alembic import context

    from ._settings import LLMProxySettings

    if context.is_offline_mode():
        raise MigrationError("llmproxy migrations run online only (they need a connection)")
    config = context.config
    version_table = config.attributes.get("version_table") or config.get_main_option("version_table")
    if not version_table:
        raise MigrationError("no version_table configured for this package's migrations")

    def run(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=None,
            version_table=version_table,
            render_as_batch=is_sqlite(connection.engine.url),
        )
        with context.begin_transaction():
            context.run_migrations()

    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or LLMProxySettings().database_url
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            run(conn)
    finally:
        engine.dispose()


def create_schema(name: str) -> None:
    """For migrations: create a PostgreSQL schema (no-op on SQLite)."""
    from alembic import op

    if op.get_bind().dialect.name == "postgresql":
        op.execute(sa.schema.CreateSchema(name, if_not_exists=True))


def drop_schema(name: str) -> None:
    """For migrations: drop a PostgreSQL schema if it is empty (no-op on SQLite)."""
    from alembic import op

    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    has_tables = bind.execute(
        sa.text("SELECT 1 FROM information_schema.tables WHERE table_schema = :s LIMIT 1"), {"s": name}
    ).first()
    if has_tables is None:
        op.execute(sa.schema.DropSchema(name, if_exists=True))
