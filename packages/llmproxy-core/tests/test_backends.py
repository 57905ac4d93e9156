"""The shared test backends work, on both kinds."""

from __future__ import annotations

import sqlalchemy as sa

from llmproxy.core import TenantRegistry, create_engine, current_revisions, redis_from_url
from llmproxy.core.testing import Backend


def test_backend_redis_answers_and_starts_empty(backend: Backend) -> None:
    client = redis_from_url(backend.redis_url)
    assert client.dbsize() == 0
    client.set("k", "v")
    assert client.get("k") == b"v"


def test_backend_database_is_migrated_and_empty(backend: Backend) -> None:
    assert current_revisions(backend.database_url)["core"] == "core_0001"
    engine = create_engine(backend.database_url)
    try:
        assert TenantRegistry(engine).list() == []
    finally:
        engine.dispose()


def test_redis_cut_and_restore_through_proxy(proxied_backend: Backend) -> None:
    import redis

    assert proxied_backend.redis_proxy is not None
    client = redis_from_url(proxied_backend.redis_url, socket_timeout=1)
    assert client.ping()
    proxied_backend.redis_proxy.cut()
    try:
        client.ping()
        raise AssertionError("ping went through a cut proxy")
    except redis.ConnectionError:
        pass
    proxied_backend.redis_proxy.restore()
    assert client.ping()


def test_database_cut_and_restore_through_proxy(proxied_backend: Backend) -> None:
    assert proxied_backend.database_proxy is not None
    engine = create_engine(proxied_backend.database_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
        proxied_backend.database_proxy.cut()
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            raise AssertionError("query went through a cut proxy")
        except sa.exc.OperationalError:
            pass
        proxied_backend.database_proxy.restore()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
