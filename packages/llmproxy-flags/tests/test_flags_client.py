"""FlagsClient / AsyncFlagsClient: loads, the Redis cache, propagation, polling, start-up with no backend."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from llmproxy.core import ManualClock, redis_from_url
from llmproxy.core.testing import Backend, free_port
from llmproxy.flags import AsyncFlagsClient, Feature, Flag, FlagContext, FlagsClient, keys

MakeClient = Callable[..., FlagsClient]
Eventually = Callable[..., bool]


def test_start_loads_the_stored_set_and_is_ready(make_client: MakeClient) -> None:
    writer = make_client()
    writer.put(Flag(key="streaming", default_value=True))
    reader = make_client()
    status = reader.start()
    assert status.ready
    assert status.reason is None
    assert status.version == reader.snapshot_version == writer.snapshot_version
    assert reader.is_enabled("streaming")


def test_code_defaults_fill_in_for_flags_the_store_does_not_define(make_client: MakeClient) -> None:
    make_client().put(Flag(key="stored", default_value=False))
    client = make_client(
        defaults=[Flag(key="stored", default_value=True), Flag(key="unstored", default_value=True)]
    )
    client.start()
    assert not client.is_enabled("stored")  # the stored definition wins
    assert client.is_enabled("unstored")  # the default fills in


def test_a_cold_start_reads_the_cached_snapshot_from_redis_not_the_database(make_client: MakeClient) -> None:
    make_client().put(Flag(key="f", default_value=True))  # a write caches the snapshot
    cold = make_client()
    assert cold.start().source == "redis"
    assert (cold.stats.loads_redis, cold.stats.loads_database) == (1, 0)
    assert cold.is_enabled("f")


def test_a_write_reaches_another_client_through_pub_sub(
    eventually: Eventually, make_client: MakeClient
) -> None:
    writer, reader = make_client(), make_client()
    reader.start()
    writer.start()
    writer.put(Flag(key="llm_gateway", enabled_for_tenants={"7a1c1a40-8d1e-4a3c-9c62-0c5f1b7e2d11"}))
    tenant = FlagContext(tenant_id="7a1c1a40-8d1e-4a3c-9c62-0c5f1b7e2d11")
    assert eventually(lambda: reader.is_enabled("llm_gateway", tenant))
    assert reader.snapshot_version == writer.snapshot_version
    assert reader.stats.messages_received >= 1
    writer.delete("llm_gateway")
    assert eventually(lambda: "llm_gateway" not in reader.snapshot)


def test_without_messages_the_version_key_poll_picks_a_change_up(
    eventually: Eventually, make_client: MakeClient
) -> None:
    clock = ManualClock()
    reader = make_client(subscribe=False, poll_interval=15, clock=clock)
    reader.start()
    make_client().put(Flag(key="late", default_value=True))
    assert not eventually(lambda: "late" in reader.snapshot, timeout=0.5)  # no message, poll not due yet
    clock.advance(15)
    assert eventually(lambda: "late" in reader.snapshot)
    assert reader.stats.polls >= 1
    assert reader.stats.messages_received == 0


def test_a_corrupt_cache_entry_is_ignored_and_the_database_is_read(
    backend: Backend, make_client: MakeClient
) -> None:
    make_client().put(Flag(key="f", default_value=True))
    snapshot_key, _, _ = keys("default")
    redis = redis_from_url(backend.redis_url)
    redis.hset(snapshot_key, "body", "{not json")
    redis.close()
    client = make_client()
    assert client.start().source == "database"
    assert client.stats.corrupt_cache_entries == 1
    assert client.is_enabled("f")


def test_start_up_without_any_backend_serves_the_defaults_with_the_reason(tmp_path: Path) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    dead_db = f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}"
    client = FlagsClient.from_urls(
        dead_redis, dead_db, defaults=[Flag(key="llm_gateway", default_value=True)]
    )
    try:
        status = client.start(timeout=0.3)
        assert not status.ready
        assert status.source == "defaults"
        assert status.reason is not None
        assert "no successful load within 0.3 s" in status.reason
        assert client.is_enabled("llm_gateway")
        assert client.stats.database_errors >= 1
    finally:
        client.close()


def test_with_the_database_away_a_cached_snapshot_beats_the_defaults(
    backend: Backend, tmp_path: Path
) -> None:
    writer = FlagsClient.from_urls(backend.redis_url, backend.database_url)
    writer.put(Flag(key="cached", default_value=True))
    writer.close()
    # A newer version than the cached one was announced, and the database that has it is unreachable.
    _, version_key, _ = keys("default")
    redis = redis_from_url(backend.redis_url)
    token = redis.get(version_key)
    epoch = token.decode().rsplit(":", 1)[0]  # type: ignore[union-attr]
    redis.set(version_key, f"{epoch}:999")
    redis.close()
    client = FlagsClient.from_urls(backend.redis_url, f"sqlite:///{tmp_path / 'nowhere' / 'x.db'}")
    try:
        status = client.start(timeout=0.5)
        assert status.source == "redis-stale"
        assert not status.ready
        assert client.is_enabled("cached")
    finally:
        client.close()


def test_the_unleash_json_of_the_served_set_is_what_redis_caches(
    backend: Backend, make_client: MakeClient
) -> None:
    writer = make_client()
    writer.put(Feature(name="plain"))
    snapshot_key, _, _ = keys("default")
    redis = redis_from_url(backend.redis_url)
    body = redis.hget(snapshot_key, "body")
    ttl = redis.ttl(snapshot_key)
    redis.close()
    assert json.loads(body)["features"][0]["name"] == "plain"  # type: ignore[arg-type]
    assert 0 < ttl <= 7 * 24 * 3600


async def test_the_async_client_loads_writes_and_hears_the_sync_one(backend: Backend) -> None:
    sync_writer = FlagsClient.from_urls(backend.redis_url, backend.database_url)
    client = AsyncFlagsClient.from_urls(backend.redis_url, backend.database_url)
    try:
        status = await client.start()
        assert status.ready
        await client.put(Flag(key="from-async", default_value=True))
        assert client.is_enabled("from-async")
        sync_writer.put(Flag(key="from-sync", default_value=True))
        import asyncio

        for _ in range(300):
            if client.is_enabled("from-sync"):
                break
            await asyncio.sleep(0.01)
        assert client.is_enabled("from-sync")
        assert client.stats.messages_received >= 1
    finally:
        sync_writer.close()
        await client.aclose()


def test_the_background_loader_starts_on_first_use(eventually: Eventually, make_client: MakeClient) -> None:
    make_client().put(Flag(key="f", default_value=True))
    client = make_client()
    assert not client.ready
    client.is_enabled("f")  # no start(): the first evaluation starts the loader
    assert eventually(lambda: client.ready and client.is_enabled("f"))


@pytest.mark.parametrize("bad_value", [0, -1.0])
def test_options_are_validated_naming_the_field(backend: Backend, bad_value: float) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="poll_interval"):
        FlagsClient.from_urls(backend.redis_url, backend.database_url, poll_interval=bad_value)
