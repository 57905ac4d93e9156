"""API keys: create / verify / revoke / expire / list on embedded (fakeredis + SQLite) and real backends."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from llmproxy.auth import (
    ApiKeyExpired,
    ApiKeyNotFound,
    ApiKeyRevoked,
    ApiKeyService,
    AuthUnavailable,
    InvalidApiKey,
    api_keys_table,
    cache_key,
    hash_secret,
)
from llmproxy.core import ManualClock, TenantNotFound, TenantRegistry, create_engine, redis_from_url
from llmproxy.core.testing.plugin import Backend


def second_process_view(backend: Backend, clock: ManualClock) -> ApiKeyService:
    """Another service with its own L1, as another gateway process would have."""
    return ApiKeyService.from_urls(backend.redis_url, backend.database_url, clock=clock)


def test_created_key_verifies_to_its_tenant_and_scopes(keys: ApiKeyService, tenant_id: uuid.UUID) -> None:
    created = keys.create(tenant_id, "ci bot", scopes=("api:access", "models:read"))

    principal = keys.verify(created.secret)

    assert principal.kind == "api_key"
    assert principal.tenant_id == str(tenant_id)
    assert principal.api_key_id == str(created.key.id)
    assert principal.scopes == {"api:access", "models:read"}
    assert principal.user_id is None


def test_secret_has_prefix_and_high_entropy_and_only_its_hash_is_stored(
    keys: ApiKeyService, tenant_id: uuid.UUID, backend: Backend
) -> None:
    created = keys.create(tenant_id, "k")

    assert created.secret.startswith("sk-llmp-")
    assert len(created.secret) >= len("sk-llmp-") + 43
    engine = create_engine(backend.database_url)
    with engine.connect() as conn:
        row = conn.execute(sa.select(api_keys_table)).one()
    engine.dispose()
    assert row.key_hash == hash_secret(created.secret)
    assert created.secret not in str(tuple(row))
    assert created.secret not in repr(created)


def test_two_keys_never_share_a_secret(keys: ApiKeyService, tenant_id: uuid.UUID) -> None:
    secrets = {keys.create(tenant_id, f"k{i}").secret for i in range(20)}
    assert len(secrets) == 20


def test_unknown_key_is_rejected(keys: ApiKeyService) -> None:
    with pytest.raises(InvalidApiKey):
        keys.verify("sk-llmp-" + "A" * 43)


@pytest.mark.parametrize("secret", ["", "sk-llmp-short", "Bearer x", "x" * 300, "sk-llmp-" + "A" * 300])
def test_malformed_key_is_rejected(keys: ApiKeyService, secret: str) -> None:
    with pytest.raises(InvalidApiKey):
        keys.verify(secret)


def test_revoked_key_is_rejected_at_once_in_the_revoking_process(
    keys: ApiKeyService, tenant_id: uuid.UUID
) -> None:
    created = keys.create(tenant_id, "k")
    keys.verify(created.secret)

    keys.revoke(created.key.id)

    with pytest.raises(ApiKeyRevoked):
        keys.verify(created.secret)
    assert keys.get(created.key.id).revoked_at is not None


def test_revocation_reaches_another_process_within_the_sync_interval(
    keys: ApiKeyService, tenant_id: uuid.UUID, backend: Backend, manual_clock: ManualClock
) -> None:
    created = keys.create(tenant_id, "k")
    other = second_process_view(backend, manual_clock)
    try:
        other.verify(created.secret)  # now in the other process's L1

        keys.revoke(created.key.id)
        manual_clock.advance(0.5)

        with pytest.raises(ApiKeyRevoked):
            other.verify(created.secret)
    finally:
        other.close()


def test_revoke_is_idempotent(keys: ApiKeyService, tenant_id: uuid.UUID) -> None:
    created = keys.create(tenant_id, "k")
    keys.revoke(created.key.id)
    first = keys.get(created.key.id).revoked_at

    keys.revoke(created.key.id)

    assert keys.get(created.key.id).revoked_at == first


def test_revoking_an_unknown_key_raises_not_found(keys: ApiKeyService) -> None:
    with pytest.raises(ApiKeyNotFound):
        keys.revoke(uuid.uuid4())


def test_key_is_rejected_once_expired(
    keys: ApiKeyService, tenant_id: uuid.UUID, manual_clock: ManualClock
) -> None:
    expires = datetime.fromtimestamp(manual_clock.now(), UTC) + timedelta(hours=1)
    created = keys.create(tenant_id, "k", expires_at=expires)
    keys.verify(created.secret)

    manual_clock.advance(3600)

    with pytest.raises(ApiKeyExpired):
        keys.verify(created.secret)


def test_list_returns_the_tenants_keys_oldest_first_without_secrets(
    keys: ApiKeyService, tenant_id: uuid.UUID, manual_clock: ManualClock
) -> None:
    a = keys.create(tenant_id, "a")
    manual_clock.advance(1)
    b = keys.create(tenant_id, "b", scopes=())

    listed = keys.list(tenant_id)

    assert [k.id for k in listed] == [a.key.id, b.key.id]
    assert listed[1].scopes == frozenset()
    assert all(k.hint.startswith("sk-llmp-") and "..." in k.hint for k in listed)


def test_get_unknown_key_raises_not_found(keys: ApiKeyService) -> None:
    with pytest.raises(ApiKeyNotFound):
        keys.get(uuid.uuid4())


def test_creating_a_key_for_an_unknown_tenant_raises_tenant_not_found(keys: ApiKeyService) -> None:
    with pytest.raises(TenantNotFound):
        keys.create(uuid.uuid4(), "k")


@pytest.mark.parametrize("scopes", [("has space",), ("",), "api:access"])
def test_invalid_scopes_are_refused(keys: ApiKeyService, tenant_id: uuid.UUID, scopes: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        keys.create(tenant_id, "k", scopes=scopes)  # type: ignore[arg-type]


def test_deleting_the_tenant_deletes_its_keys(
    keys: ApiKeyService, tenant_id: uuid.UUID, backend: Backend
) -> None:
    keys.create(tenant_id, "k")
    engine = create_engine(backend.database_url)
    TenantRegistry(engine).delete(tenant_id)
    engine.dispose()

    assert keys.list(tenant_id) == []


def test_revoke_tenant_revokes_every_key_of_the_tenant_in_every_process(
    keys: ApiKeyService, tenant_id: uuid.UUID, backend: Backend, manual_clock: ManualClock
) -> None:
    engine = create_engine(backend.database_url)
    bystander = TenantRegistry(engine).create(f"bystander-{uuid.uuid4().hex[:8]}").id
    a, b = keys.create(tenant_id, "a"), keys.create(tenant_id, "b")
    already = keys.create(tenant_id, "already revoked")
    keys.revoke(already.key.id)
    kept = keys.create(bystander, "kept")
    other = second_process_view(backend, manual_clock)
    try:
        for created in (a, b, kept):
            other.verify(created.secret)  # now in the other process's L1 (and in Redis)
            keys.verify(created.secret)

        assert keys.revoke_tenant(str(tenant_id)) == 2
        manual_clock.advance(0.5)

        for created in (a, b):
            with pytest.raises(ApiKeyRevoked):
                keys.verify(created.secret)
            with pytest.raises(ApiKeyRevoked):
                other.verify(created.secret)
            assert keys.get(created.key.id).revoked_at is not None
        assert other.verify(kept.secret).tenant_id == str(bystander)
        # Then the tenant is deleted (rows cascade away): a process that never saw the keys refuses them too.
        TenantRegistry(engine).delete(tenant_id)
        fresh = second_process_view(backend, manual_clock)
        try:
            for created in (a, b):
                with pytest.raises(InvalidApiKey):
                    fresh.verify(created.secret)
        finally:
            fresh.close()
    finally:
        other.close()
        engine.dispose()


def test_revoke_tenant_is_idempotent_and_zero_for_an_unknown_tenant(
    keys: ApiKeyService, tenant_id: uuid.UUID
) -> None:
    created = keys.create(tenant_id, "k")
    assert keys.revoke_tenant(tenant_id) == 1
    first = keys.get(created.key.id).revoked_at

    assert keys.revoke_tenant(tenant_id) == 0
    assert keys.revoke_tenant(uuid.uuid4()) == 0

    assert keys.get(created.key.id).revoked_at == first
    with pytest.raises(ValueError, match="tenant_id"):
        keys.revoke_tenant("not-a-uuid")


def test_last_used_at_is_written_in_batches_not_per_request(
    keys: ApiKeyService, tenant_id: uuid.UUID, manual_clock: ManualClock
) -> None:
    created = keys.create(tenant_id, "k")
    keys.verify(created.secret)
    assert keys.get(created.key.id).last_used_at is None

    manual_clock.advance(61)
    keys.verify(created.secret)

    used = keys.get(created.key.id).last_used_at
    assert used == datetime.fromtimestamp(manual_clock.now(), UTC)


def test_verification_is_served_from_l1_without_redis_or_database(
    keys: ApiKeyService, tenant_id: uuid.UUID, backend: Backend
) -> None:
    created = keys.create(tenant_id, "k")
    keys.verify(created.secret)
    _delete_everywhere(backend, created.key.id, hash_secret(created.secret))

    assert keys.verify(created.secret).api_key_id == str(created.key.id)


def test_another_process_is_served_from_redis_without_the_database(
    keys: ApiKeyService, tenant_id: uuid.UUID, backend: Backend, manual_clock: ManualClock
) -> None:
    created = keys.create(tenant_id, "k")
    keys.verify(created.secret)  # fills Redis
    _delete_row(backend, created.key.id)
    other = second_process_view(backend, manual_clock)
    try:
        assert other.verify(created.secret).tenant_id == str(tenant_id)
    finally:
        other.close()


def test_unknown_key_is_remembered_briefly_so_guessing_does_not_reach_the_database(
    keys: ApiKeyService, backend: Backend
) -> None:
    secret = "sk-llmp-" + "B" * 43
    with pytest.raises(InvalidApiKey):
        keys.verify(secret)

    client = redis_from_url(backend.redis_url)
    try:
        assert client.get(cache_key(hash_secret(secret))) == b"-"
        assert 0 < client.pttl(cache_key(hash_secret(secret))) <= 30_000
    finally:
        client.close()


def test_pepper_changes_the_stored_hash(
    backend: Backend, tenant_id: uuid.UUID, manual_clock: ManualClock
) -> None:
    service = ApiKeyService.from_urls(
        backend.redis_url, backend.database_url, pepper=b"p" * 32, clock=manual_clock
    )
    try:
        created = service.create(tenant_id, "k")
        assert service.verify(created.secret).api_key_id == str(created.key.id)
        engine = create_engine(backend.database_url)
        with engine.connect() as conn:
            stored = conn.execute(sa.select(api_keys_table.c.key_hash)).scalar_one()
        engine.dispose()
        assert stored == hash_secret(created.secret, b"p" * 32) != hash_secret(created.secret)
    finally:
        service.close()


def test_sync_interval_over_one_second_is_refused(backend: Backend) -> None:
    with pytest.raises(ValueError, match="sync_interval"):
        ApiKeyService.from_urls(backend.redis_url, backend.database_url, sync_interval=2.0)


def _delete_row(backend: Backend, key_id: uuid.UUID) -> None:
    engine = create_engine(backend.database_url)
    with engine.begin() as conn:
        conn.execute(sa.delete(api_keys_table).where(api_keys_table.c.id == key_id))
    engine.dispose()


def _delete_everywhere(backend: Backend, key_id: uuid.UUID, key_hash: str) -> None:
    _delete_row(backend, key_id)
    client = redis_from_url(backend.redis_url)
    client.delete(cache_key(key_hash))
    client.close()


# -- services cut off ---------------------------------------------------------------------------------------


@pytest.fixture
def tenant_in(proxied_backend: Backend) -> uuid.UUID:
    engine = create_engine(proxied_backend.database_url)
    try:
        return TenantRegistry(engine).create("cut").id
    finally:
        engine.dispose()


@pytest.mark.real
def test_verification_falls_back_to_the_database_when_redis_is_cut(
    proxied_backend: Backend, tenant_in: uuid.UUID, manual_clock: ManualClock
) -> None:
    service = ApiKeyService.from_urls(
        proxied_backend.redis_url, proxied_backend.database_url, clock=manual_clock
    )
    try:
        created = service.create(tenant_in, "k")
        assert proxied_backend.redis_proxy is not None
        proxied_backend.redis_proxy.cut()

        assert service.verify(created.secret).api_key_id == str(created.key.id)
    finally:
        if proxied_backend.redis_proxy is not None:
            proxied_backend.redis_proxy.restore()
        service.close()


@pytest.mark.real
def test_database_cut_with_nothing_cached_is_auth_unavailable(
    proxied_backend: Backend, tenant_in: uuid.UUID, manual_clock: ManualClock
) -> None:
    service = ApiKeyService.from_urls(
        proxied_backend.redis_url, proxied_backend.database_url, clock=manual_clock
    )
    try:
        assert proxied_backend.database_proxy is not None
        proxied_backend.database_proxy.cut()

        with pytest.raises(AuthUnavailable):
            service.verify("sk-llmp-" + "C" * 43)
    finally:
        if proxied_backend.database_proxy is not None:
            proxied_backend.database_proxy.restore()
        service.close()


@pytest.mark.real
def test_revoke_tenant_with_redis_cut_is_auth_unavailable_and_a_retry_reaches_every_process(
    proxied_backend: Backend, tenant_in: uuid.UUID, manual_clock: ManualClock
) -> None:
    service = ApiKeyService.from_urls(
        proxied_backend.redis_url, proxied_backend.database_url, clock=manual_clock
    )
    other = second_process_view(proxied_backend, manual_clock)
    assert proxied_backend.redis_proxy is not None
    try:
        created = service.create(tenant_in, "k")
        other.verify(created.secret)
        proxied_backend.redis_proxy.cut()

        with pytest.raises(AuthUnavailable):
            service.revoke_tenant(tenant_in)
        assert service.get(created.key.id).revoked_at is not None  # the database change stands

        proxied_backend.redis_proxy.restore()
        assert service.revoke_tenant(tenant_in) == 0  # nothing newly revoked, but every process is told
        manual_clock.advance(0.5)
        with pytest.raises(ApiKeyRevoked):
            other.verify(created.secret)
    finally:
        proxied_backend.redis_proxy.restore()
        other.close()
        service.close()


class CountingRedis:
    """The real client, counting the commands sent through it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if name in ("get", "set", "incr") and callable(attr):

            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls += 1
                return attr(*args, **kwargs)

            return counted
        return attr


@pytest.mark.real
def test_after_a_redis_failure_verification_leaves_redis_alone_for_a_second(
    proxied_backend: Backend, tenant_in: uuid.UUID, manual_clock: ManualClock
) -> None:
    engine = create_engine(proxied_backend.database_url)
    redis = CountingRedis(
        redis_from_url(proxied_backend.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    )
    service = ApiKeyService(engine, redis, clock=manual_clock)  # type: ignore[arg-type]
    try:
        first, second = service.create(tenant_in, "a"), service.create(tenant_in, "b")
        assert proxied_backend.redis_proxy is not None
        proxied_backend.redis_proxy.cut()

        service.verify(first.secret)
        calls_after_failure = redis.calls
        service.verify(second.secret)  # an L1 miss, but Redis is known to be down
        assert redis.calls == calls_after_failure

        manual_clock.advance(1.0)
        service.verify(second.secret)
        assert redis.calls > calls_after_failure
    finally:
        if proxied_backend.redis_proxy is not None:
            proxied_backend.redis_proxy.restore()
        service.close()
        redis.client.close()
        engine.dispose()
