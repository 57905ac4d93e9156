"""SQLAlchemy engines for PostgreSQL (production) and SQLite (embedded default).

llmproxy tables live in PostgreSQL schemas (``tenants``, ``configuration``, ``auth``, ...). SQLite has no
schemas, so SQLite engines translate every llmproxy schema to the default one; table names are unique
across schemas for that reason. SQLite engines also switch foreign keys on (for ``ON DELETE CASCADE``).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.ext.asyncio import create_async_engine as _sa_create_async_engine
from sqlalchemy.orm import DeclarativeBase

from ._database_url import DatabaseURLError

#: Every PostgreSQL schema an llmproxy package uses. A package adding a schema appends it here.
SCHEMAS: list[str] = ["tenants", "configuration", "auth", "quota", "flags", "metering", "audit"]

#: One MetaData for all llmproxy tables, so foreign keys across packages resolve.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class Base(DeclarativeBase):
    """Declarative base bound to the shared :data:`metadata`."""

    metadata = metadata


def tenant_id_column(name: str = "tenant_id", *, primary_key: bool = False, **kwargs: Any) -> sa.Column[Any]:
    """The column every package's table references its tenant by: a UUID foreign key to core's
    ``tenants.tenants`` with ``ON DELETE CASCADE`` (deleting a tenant deletes what it owns), not null."""
    return sa.Column(
        name,
        sa.Uuid,
        sa.ForeignKey("tenants.tenants.id", ondelete="CASCADE"),
        nullable=False,
        primary_key=primary_key,
        **kwargs,
    )


def _parse(url: str) -> sa.URL:
    try:
        parsed = make_url(url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError with a terse message
        raise DatabaseURLError(f"not a database URL: {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend not in ("postgresql", "sqlite"):
        raise DatabaseURLError(
            f"unsupported database {backend!r} in {url!r}; use postgresql+psycopg:// or sqlite://"
        )
    return parsed


def is_sqlite(url: str | sa.URL) -> bool:
    return (make_url(url) if isinstance(url, str) else url).get_backend_name() == "sqlite"


def sync_url(url: str) -> sa.URL:
    parsed = _parse(url)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in (
        "psycopg2",
        "asyncpg",
        "psycopg",
    ):
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite")
    return parsed


def async_url(url: str) -> sa.URL:
    parsed = sync_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    return parsed  # psycopg 3 serves both sync and async under one dialect name


def _sqlite_options() -> dict[str, Any]:
    return {"schema_translate_map": {name: None for name in SCHEMAS}}


def _enable_sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(url: str, **kwargs: Any) -> Engine:
    """A sync engine: ``postgresql+psycopg://`` (``postgresql://`` accepted) or ``sqlite:///path``."""
    parsed = sync_url(url)
    if parsed.get_backend_name() == "sqlite":
        kwargs.setdefault("connect_args", {}).setdefault("timeout", 30)
        engine = sa.create_engine(parsed, **kwargs).execution_options(**_sqlite_options())
        sa.event.listen(engine, "connect", _enable_sqlite_foreign_keys)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("connect_args", {}).setdefault("connect_timeout", 5)
    return sa.create_engine(parsed, **kwargs)


def create_async_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An asyncio engine for the same URLs as :func:`create_engine` (SQLite through aiosqlite)."""
    parsed = async_url(url)
    if parsed.get_backend_name() == "sqlite":
        kwargs.setdefault("connect_args", {}).setdefault("timeout", 30)
        engine = _sa_create_async_engine(parsed, **kwargs).execution_options(**_sqlite_options())
        sa.event.listen(engine.sync_engine, "connect", _enable_sqlite_foreign_keys)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("connect_args", {}).setdefault("connect_timeout", 5)
    return _sa_create_async_engine(parsed, **kwargs)
