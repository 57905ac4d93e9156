"""Redis clients, engines and settings from URLs, with clear errors for bad ones."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from llmproxy.core import (
    DatabaseURLError,
    LLMProxySettings,
    ManualClock,
    RedisURLError,
    async_redis_from_url,
    create_async_engine,
    create_engine,
    redis_from_url,
)
from llmproxy.core._redis import _sentinel_parts


def test_memory_clients_of_one_name_share_data_and_other_names_do_not() -> None:
    name = uuid.uuid4().hex
    a, b = redis_from_url(f"memory://{name}"), redis_from_url(f"memory://{name}")
    other = redis_from_url(f"memory://{name}-other")
    a.set("k", "1")
    assert b.get("k") == b"1"
    assert other.get("k") is None


async def test_memory_async_and_sync_clients_share_one_server() -> None:
    url = f"memory://{uuid.uuid4().hex}"
    redis_from_url(url).set("k", "sync")
    client = async_redis_from_url(url)
    assert await client.get("k") == b"sync"
    await client.aclose()


def test_lua_scripts_run_on_every_backend(redis_url: str) -> None:
    client = redis_from_url(redis_url)
    result = client.eval("redis.call('SET', KEYS[1], ARGV[1]); return redis.call('TIME')", 1, "k", "v")
    assert client.get("k") == b"v"
    assert len(result) == 2
    assert int(result[0]) > 1_600_000_000


def test_cluster_url_reaches_a_real_cluster(redis_cluster_url: str) -> None:
    from redis.cluster import RedisCluster

    client = redis_from_url(redis_cluster_url)
    assert isinstance(client, RedisCluster)
    for i in range(20):  # keys spread over every node's slots
        client.set(f"key-{i}", i)
    assert [int(client.get(f"key-{i}")) for i in range(20)] == list(range(20))  # type: ignore[arg-type]
    client.close()


def test_sentinel_url_names_nodes_service_db_and_password() -> None:
    nodes, service, db, extra = _sentinel_parts("redis+sentinel://:s3cret@h1:26379,h2/mymaster/2")
    assert nodes == [("h1", 26379), ("h2", 26379)]
    assert (service, db, extra) == ("mymaster", 2, {"password": "s3cret"})


def test_sentinel_url_without_service_is_rejected() -> None:
    with pytest.raises(RedisURLError, match="must name the service"):
        _sentinel_parts("redis+sentinel://h1:26379")


@pytest.mark.parametrize("url", ["http://x", "localhost:6379", "memcached://x", ""])
def test_unsupported_redis_urls_are_rejected_by_name(url: str) -> None:
    with pytest.raises(RedisURLError, match="Redis URL"):
        redis_from_url(url)


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url"])
def test_unsupported_database_urls_are_rejected(url: str) -> None:
    with pytest.raises(DatabaseURLError):
        create_engine(url)


def test_postgres_urls_get_the_psycopg_driver_for_sync_and_async() -> None:
    assert create_engine("postgresql://u@h/db").url.drivername == "postgresql+psycopg"
    assert create_async_engine("postgresql://u@h/db").url.drivername == "postgresql+psycopg"
    assert create_async_engine("sqlite:///x.db").url.drivername == "sqlite+aiosqlite"


def test_settings_read_the_llmproxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMPROXY_REDIS_URL", "redis://example:6380/1")
    monkeypatch.setenv("LLMPROXY_DATABASE_URL", "postgresql+psycopg://u@h/db")
    settings = LLMProxySettings()
    assert (settings.redis_url, settings.database_url) == (
        "redis://example:6380/1",
        "postgresql+psycopg://u@h/db",
    )


def test_settings_default_to_the_embedded_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMPROXY_REDIS_URL", raising=False)
    monkeypatch.delenv("LLMPROXY_DATABASE_URL", raising=False)
    settings = LLMProxySettings()
    assert settings.redis_url.startswith("memory://")
    assert settings.database_url.startswith("sqlite:///")


def test_a_bad_setting_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMPROXY_REDIS_URL", "http://nope")
    with pytest.raises(ValidationError, match="redis_url"):
        LLMProxySettings()


def test_manual_clock_moves_only_forward() -> None:
    clock = ManualClock(100.0)
    assert clock.advance(2.5) == 102.5
    assert clock.now() == clock.monotonic() == 102.5
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
