"""Engines with a connect and a statement timeout: no database call waits longer, even on a paused server."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from llmproxy.core import create_async_engine, create_engine
from llmproxy.core.testing import Backend


@pytest.mark.real
def test_postgres_sessions_carry_the_statement_timeout(real_backend: Backend) -> None:
    engine = create_engine(real_backend.database_url, connect_timeout=2, statement_timeout=1.5)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "1500ms"
            with pytest.raises(sa.exc.OperationalError, match="statement timeout"):
                conn.execute(sa.text("SELECT pg_sleep(5)"))
    finally:
        engine.dispose()


@pytest.mark.real
def test_a_paused_postgres_is_an_operational_error_not_a_hang(proxied_backend: Backend) -> None:
    proxy = proxied_backend.database_proxy
    assert proxy is not None
    engine = create_engine(proxied_backend.database_url, connect_timeout=2, statement_timeout=1)
    try:
        with engine.connect() as conn:  # a pooled connection, open when the server stops answering
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
        proxy.pause()
        for _ in range(2):  # the pooled connection, then a new one
            with pytest.raises(sa.exc.OperationalError), engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        proxy.restore()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


@pytest.mark.real
async def test_a_paused_postgres_is_an_operational_error_not_a_hang_async(proxied_backend: Backend) -> None:
    proxy = proxied_backend.database_proxy
    assert proxy is not None
    engine = create_async_engine(proxied_backend.database_url, connect_timeout=2, statement_timeout=1)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(sa.text("SELECT 1"))).scalar() == 1
        proxy.pause()
        for _ in range(2):
            with pytest.raises(sa.exc.OperationalError):
                async with engine.begin() as conn:
                    await conn.execute(sa.text("SELECT 1"))
        proxy.restore()
        async with engine.connect() as conn:
            assert (await conn.execute(sa.text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


@pytest.mark.real
def test_without_timeouts_postgres_keeps_its_defaults(real_backend: Backend) -> None:
    engine = create_engine(real_backend.database_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "0"
    finally:
        engine.dispose()


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_sqlite_waits_for_a_lock_no_longer_than_the_statement_timeout(
    tmp_path: Path, asynchronous: bool
) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")  # another process's write transaction
    try:
        if asynchronous:
            aengine = create_async_engine(f"sqlite:///{path}", statement_timeout=0.2)
            with pytest.raises(sa.exc.OperationalError, match="locked"):
                async with aengine.begin() as conn:
                    await conn.execute(sa.text("INSERT INTO t VALUES (1)"))
            await aengine.dispose()
        else:
            engine = create_engine(f"sqlite:///{path}", statement_timeout=0.2)
            with pytest.raises(sa.exc.OperationalError, match="locked"), engine.begin() as conn:
                conn.execute(sa.text("INSERT INTO t VALUES (1)"))
            engine.dispose()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
