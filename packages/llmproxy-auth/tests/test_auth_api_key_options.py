"""API keys: one validated options object, typed flow operations, failures thrown into the flows, and the
fail-fast Redis client of ``from_urls``."""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from llmproxy.auth import (
    ApiKeyOptions,
    ApiKeyRevoked,
    ApiKeyService,
    AsyncApiKeyService,
    AuthUnavailable,
    cache_key,
    hash_secret,
)
from llmproxy.auth._keys import EPOCH_KEY, Operation, RedisGet, RedisIncr, RedisSet, SqlFetch, SqlWrite
from llmproxy.core import (
    ManualClock,
    TenantRegistry,
    create_engine,
    fail_fast_redis_options,
    redis_from_url,
    run_flow,
)
from llmproxy.core.testing import RedisServer, free_port
from llmproxy.core.testing.plugin import Backend

# -- options -----------------------------------------------------------------------------------------------


async def test_both_services_take_one_options_object_and_keyword_overrides(backend: Backend) -> None:
    options = ApiKeyOptions(prefix="sk-test-", l1_ttl=5.0)

    sync = ApiKeyService.from_urls(backend.redis_url, backend.database_url, options=options, redis_ttl=60.0)
    asynchronous = AsyncApiKeyService.from_urls(backend.redis_url, backend.database_url, options=options)
    try:
        assert sync.options == ApiKeyOptions(prefix="sk-test-", l1_ttl=5.0, redis_ttl=60.0)
        assert asynchronous.options is options
        assert sync.prefix == asynchronous.prefix == "sk-test-"
    finally:
        sync.close()
        await asynchronous.aclose()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("l1_ttl", float("nan")),
        ("redis_ttl", float("inf")),
        ("negative_ttl", 0),
        ("sync_interval", 2.0),
        ("l1_maxsize", 0),
        ("prefix", "sk llmp"),
        ("prefix", "sk,llmp-"),
        ("prefix", ""),
        ("last_used_intervall", 1.0),
    ],
)
def test_a_bad_option_is_refused_naming_it(backend: Backend, name: str, value: object) -> None:
    with pytest.raises(ValidationError, match=name):
        ApiKeyService.from_urls(backend.redis_url, backend.database_url, **{name: value})


def test_the_options_are_frozen() -> None:
    options = ApiKeyOptions()
    with pytest.raises(ValidationError):
        options.l1_ttl = 1.0  # type: ignore[misc]


def test_the_pepper_never_shows_in_the_options_repr() -> None:
    assert "hunter2" not in repr(ApiKeyOptions(pepper=b"hunter2" * 4))


# -- flows -------------------------------------------------------------------------------------------------


def _recording(service: ApiKeyService, seen: list[Operation]) -> Any:
    def perform(op: Operation) -> Any:
        seen.append(op)
        return service._perform(op)

    return perform


def test_a_cold_verification_asks_for_the_epoch_the_record_the_row_then_caches_it_nx(
    keys: ApiKeyService, tenant_id: uuid.UUID
) -> None:
    secret = keys.create(tenant_id, "k").secret
    seen: list[Operation] = []

    principal = run_flow(keys._core.verify(secret), _recording(keys, seen))

    key = cache_key(hash_secret(secret))
    assert principal.tenant_uuid == tenant_id
    assert [type(op) for op in seen] == [RedisGet, RedisGet, SqlFetch, RedisSet]
    assert seen[0] == RedisGet(EPOCH_KEY)
    assert seen[1] == RedisGet(key)
    last = seen[3]
    assert isinstance(last, RedisSet)
    assert (last.key, last.nx, last.px) == (key, True, 300_000)


def test_a_verification_l1_answers_asks_for_nothing(keys: ApiKeyService, tenant_id: uuid.UUID) -> None:
    secret = keys.create(tenant_id, "k").secret
    first = keys.verify(secret)
    seen: list[Operation] = []

    again = run_flow(keys._core.verify(secret), _recording(keys, seen))

    assert seen == []
    assert again is first  # the record's principal, built once: no per-request parsing or allocation


def test_a_revocation_tombstones_the_record_then_bumps_the_epoch(
    keys: ApiKeyService, tenant_id: uuid.UUID
) -> None:
    created = keys.create(tenant_id, "k")
    seen: list[Operation] = []

    run_flow(keys._core.revoke(created.key.id), _recording(keys, seen))

    assert [type(op) for op in seen] == [SqlFetch, SqlWrite, RedisSet, RedisIncr]
    tomb = seen[2]
    assert isinstance(tomb, RedisSet)
    assert not tomb.nx
    assert tomb.key == cache_key(hash_secret(created.secret))
    assert seen[3] == RedisIncr(EPOCH_KEY)


@pytest.fixture
def refused_redis_keys(backend: Backend, manual_clock: ManualClock) -> Iterator[ApiKeyService]:
    """A service whose Redis refuses every connection (nothing listens on its port)."""
    engine = create_engine(backend.database_url)
    redis = redis_from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    service = ApiKeyService(engine, redis, clock=manual_clock)
    yield service
    service.close()
    redis.close()
    engine.dispose()


def test_a_refused_redis_is_thrown_into_the_flow_which_verifies_from_the_database(
    refused_redis_keys: ApiKeyService, tenant_id: uuid.UUID, caplog: pytest.LogCaptureFixture
) -> None:
    created = refused_redis_keys.create(tenant_id, "k")

    with caplog.at_level(logging.WARNING, "llmproxy.auth"):
        principal = refused_redis_keys.verify(created.secret)

    assert principal.api_key_id == str(created.key.id)
    assert "Redis failed reading the revocation epoch (ConnectionError)" in caplog.text


def test_a_revocation_redis_refuses_stands_in_the_database_and_says_so(
    refused_redis_keys: ApiKeyService, tenant_id: uuid.UUID
) -> None:
    created = refused_redis_keys.create(tenant_id, "k")

    with pytest.raises(AuthUnavailable, match="retry revoke"):
        refused_redis_keys.revoke(created.key.id)

    assert refused_redis_keys.get(created.key.id).revoked_at is not None
    with pytest.raises(ApiKeyRevoked):  # this process holds the tombstone
        refused_redis_keys.verify(created.secret)


# -- the client from_urls builds ---------------------------------------------------------------------------


def test_from_urls_builds_its_redis_client_with_cores_fail_fast_options(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    service = ApiKeyService.from_urls(url, f"sqlite:///{tmp_path / 'unused.db'}")  # connects on first use
    try:
        made = service._redis.connection_pool.connection_kwargs
        wanted = fail_fast_redis_options(url)
        assert (made["socket_timeout"], made["socket_connect_timeout"]) == (
            wanted["socket_timeout"],
            wanted["socket_connect_timeout"],
        )
        assert made["retry"].get_retries() == wanted["retry"].get_retries() == 1
    finally:
        service.close()


@pytest.mark.real
def test_from_urls_fails_fast_while_redis_is_stalled(
    real_backend: Backend, manual_clock: ManualClock
) -> None:
    server = RedisServer().start()
    assert server.process is not None
    service = ApiKeyService.from_urls(server.url, real_backend.database_url, clock=manual_clock)
    engine = create_engine(real_backend.database_url)
    try:
        tenant = TenantRegistry(engine).create(f"stall-{uuid.uuid4().hex[:6]}").id
        created = service.create(tenant, "k")
        os.kill(server.process.pid, signal.SIGSTOP)  # connections are accepted, nothing is answered

        started = time.monotonic()
        principal = service.verify(created.secret)
        waited = time.monotonic() - started

        assert principal.api_key_id == str(created.key.id)  # from PostgreSQL
        # One stalled epoch read (0.5 s socket timeout, one retry, no backoff), then Redis is left alone.
        assert waited < 2.5
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        service.close()
        engine.dispose()
        server.stop()
