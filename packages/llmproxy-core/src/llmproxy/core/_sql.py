"""SQLAlchemy engines for PostgreSQL (production) and SQLite (embedded default).

llmproxy tables live in PostgreSQL schemas (``tenants``, ``configuration``, ``auth``, ...). SQLite has no
schemas, so SQLite engines translate every llmproxy schema to the default one; table names are unique
across schemas for that reason. SQLite engines also switch foreign keys on (for ``ON DELETE CASCADE``).
"""

from __future__ import annotations

import inspect
import math
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


def _bounded(
    parsed: sa.URL,
    kwargs: dict[str, Any],
    connect_timeout: float | None,
    statement_timeout: float | None,
) -> float | None:
    """Put the timeouts into the engine's options; the client-side bound on every PostgreSQL wait, if any.

    Explicit ``connect_args`` / ``pool_timeout`` in ``kwargs`` win."""
    connect_args = kwargs.setdefault("connect_args", {})
    pooled = not (parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"))
    if connect_timeout is not None and pooled:
        kwargs.setdefault("pool_timeout", connect_timeout)  # waiting for a pooled connection
    if parsed.get_backend_name() == "sqlite":
        # sqlite3's timeout is its busy timeout: how long a statement waits for another writer's lock.
        connect_args.setdefault("timeout", 30 if statement_timeout is None else statement_timeout)
        return None
    kwargs.setdefault("pool_pre_ping", True)
    # libpq counts whole seconds and enforces at least 2.
    connect_args.setdefault(
        "connect_timeout", 5 if connect_timeout is None else max(2, math.ceil(connect_timeout))
    )
    if statement_timeout is None:
        return None
    milliseconds = max(1, round(statement_timeout * 1000))
    connect_args["options"] = f"{connect_args.get('options', '')} -c statement_timeout={milliseconds}".strip()
    # The server enforces statement_timeout only while it runs; a server that is paused or unreachable
    # behind a connection that stays open never answers, so the client gives up a second later.
    return statement_timeout + 1.0


def create_engine(
    url: str, *, connect_timeout: float | None = None, statement_timeout: float | None = None, **kwargs: Any
) -> Engine:
    """A sync engine: ``postgresql+psycopg://`` (``postgresql://`` accepted) or ``sqlite:///path``.

    ``connect_timeout`` (seconds) bounds opening a connection (PostgreSQL: libpq's, whole seconds, at least
    2) and waiting for one from the pool; ``statement_timeout`` bounds each statement (PostgreSQL: the
    server's ``statement_timeout``, and every wait for the server's answer a second later, so a paused or
    unreachable server cannot hold a caller; SQLite: the busy timeout). A timeout raises SQLAlchemy's
    ``OperationalError`` (``TimeoutError`` for the pool). None keeps the defaults: 5 s to connect on
    PostgreSQL, a 30 s busy timeout on SQLite, no statement timeout.
    """
    parsed = sync_url(url)
    read_timeout = _bounded(parsed, kwargs, connect_timeout, statement_timeout)
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed, **kwargs).execution_options(**_sqlite_options())
        sa.event.listen(engine, "connect", _enable_sqlite_foreign_keys)
        return engine
    postgres = sa.create_engine(parsed, **kwargs)
    if read_timeout is not None and _psycopg_waits_can_time_out():
        connection_class = _bounded_psycopg_connection(read_timeout)

        def connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
            return connection_class.connect(*cargs, **cparams)

        sa.event.listen(postgres, "do_connect", connect)
    return postgres


def create_async_engine(
    url: str, *, connect_timeout: float | None = None, statement_timeout: float | None = None, **kwargs: Any
) -> AsyncEngine:
    """An asyncio engine for the same URLs and timeouts as :func:`create_engine` (SQLite: aiosqlite)."""
    parsed = async_url(url)
    read_timeout = _bounded(parsed, kwargs, connect_timeout, statement_timeout)
    if parsed.get_backend_name() == "sqlite":
        engine = _sa_create_async_engine(parsed, **kwargs).execution_options(**_sqlite_options())
        sa.event.listen(engine.sync_engine, "connect", _enable_sqlite_foreign_keys)
        return engine
    if read_timeout is not None and _psycopg_waits_can_time_out():
        kwargs["connect_args"].setdefault(
            "async_creator_fn", _bounded_psycopg_connection(read_timeout, asynchronous=True).connect
        )
    return _sa_create_async_engine(parsed, **kwargs)


def _psycopg_waits_can_time_out() -> bool:
    """psycopg 3.3 gave ``Connection.wait`` a ``timeout`` (older versions get the server-side bound only)."""
    import psycopg

    return "timeout" in inspect.signature(psycopg.AsyncConnection.wait).parameters


def _bounded_psycopg_connection(read_timeout: float, *, asynchronous: bool = False) -> Any:
    """A psycopg connection class whose waits for the server give up after ``read_timeout`` seconds.

    Every exchange with the server (queries, commits, the pool's ping) goes through ``wait``; psycopg bounds
    it when given a ``timeout``, which its own callers leave out. A wait that gave up leaves the protocol
    half-way, so the connection is closed: SQLAlchemy then sees a disconnect, drops it and every older
    pooled connection (they are likely stuck too), and the next checkout connects afresh.
    """
    import psycopg

    def gave_up(connection: Any, exc: psycopg.OperationalError) -> Exception:
        # Errors from the server carry a SQLSTATE; a connection psycopg found broken is already closed.
        if exc.sqlstate is not None or connection.closed:
            return exc
        connection.pgconn.finish()
        return psycopg.OperationalError(f"the database did not answer within {read_timeout:g} s")

    if asynchronous:

        class BoundedAsyncConnection(psycopg.AsyncConnection[Any]):
            async def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
                kwargs.setdefault("timeout", read_timeout)
                try:
                    return await super().wait(gen, *args, **kwargs)
                except psycopg.OperationalError as exc:
                    raise gave_up(self, exc) from None

        return BoundedAsyncConnection

    class BoundedConnection(psycopg.Connection[Any]):
        def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", read_timeout)
            try:
                return super().wait(gen, *args, **kwargs)
            except psycopg.OperationalError as exc:
                raise gave_up(self, exc) from None

    return BoundedConnection
