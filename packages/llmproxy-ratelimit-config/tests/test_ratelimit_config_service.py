"""RateLimitConfigService: the cache path (L1 -> Redis -> database -> defaults), counting and invalidation."""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from llmproxy.core import ManualClock, TenantNotFound, redis_from_url
from llmproxy.core.testing import Backend
from llmproxy.ratelimit_config import (
    DEFAULTS,
    RateLimitConfigService,
    TenantRateLimitConfiguration,
    cache_key,
)

ConfigFactory = Callable[..., TenantRateLimitConfiguration]
NewTenant = Callable[[str], uuid.UUID]


@pytest.fixture
def service(backend: Backend, manual_clock: ManualClock) -> Iterator[RateLimitConfigService]:
    # No subscriber here: these tests are about the read path, moved by the manual clock alone.
    with RateLimitConfigService.from_urls(
        backend.redis_url, backend.database_url, clock=manual_clock, subscribe=False
    ) as service:
        yield service


@pytest.fixture
def raw_redis(backend: Backend) -> Iterator[object]:
    client = redis_from_url(backend.redis_url)
    yield client
    client.close()


def test_the_redis_key_is_hash_tagged_by_tenant() -> None:
    tenant_id = uuid.UUID("12345678-1234-5678-1234-567812345678")

    assert cache_key(tenant_id) == "ratelimit:config:{12345678-1234-5678-1234-567812345678}"


def test_a_tenant_without_a_row_gets_the_defaults(
    service: RateLimitConfigService, backend: Backend, create_tenant: NewTenant
) -> None:
    tenant_id = create_tenant(backend.database_url)

    config, source = service.get_with_source(tenant_id)

    assert source == "default"
    assert config == DEFAULTS.for_tenant(tenant_id)


def test_loads_walk_database_then_l1_then_redis_then_database_again(
    service: RateLimitConfigService,
    backend: Backend,
    manual_clock: ManualClock,
    raw_redis: object,
    create_tenant: NewTenant,
    make_config: ConfigFactory,
) -> None:
    tenant_id = create_tenant(backend.database_url)
    config = make_config(tenant_id)
    service.repository.upsert(config)  # straight to the database: no cache involved

    first = service.get_with_source(tenant_id)
    second = service.get_with_source(tenant_id)
    manual_clock.advance(5.01)  # past the L1 TTL
    third = service.get_with_source(tenant_id)
    raw_redis.delete(cache_key(tenant_id))  # type: ignore[attr-defined]
    manual_clock.advance(5.01)
    fourth = service.get_with_source(tenant_id)

    assert [first.source, second.source, third.source, fourth.source] == [
        "database",
        "l1",
        "redis",
        "database",
    ]
    assert first.config == second.config == third.config == fourth.config == config


def test_a_database_load_fills_redis_with_the_model_json_for_60_seconds(
    service: RateLimitConfigService,
    backend: Backend,
    raw_redis: object,
    create_tenant: NewTenant,
    make_config: ConfigFactory,
) -> None:
    tenant_id = create_tenant(backend.database_url)
    config = make_config(tenant_id)
    service.repository.upsert(config)

    service.get(tenant_id)

    key = cache_key(tenant_id)
    assert TenantRateLimitConfiguration.model_validate_json(raw_redis.get(key)) == config  # type: ignore[attr-defined]
    assert 0 < raw_redis.ttl(key) <= 60  # type: ignore[attr-defined]


def test_a_tenant_without_a_row_is_cached_in_redis_as_null(
    service: RateLimitConfigService,
    backend: Backend,
    manual_clock: ManualClock,
    raw_redis: object,
    create_tenant: NewTenant,
) -> None:
    tenant_id = create_tenant(backend.database_url)
    service.get(tenant_id)
    manual_clock.advance(5.01)

    config, source = service.get_with_source(tenant_id)

    assert json.loads(raw_redis.get(cache_key(tenant_id))) is None  # type: ignore[attr-defined]
    assert source == "redis"
    assert config == DEFAULTS.for_tenant(tenant_id)


@pytest.mark.parametrize("corrupt", [b"{not json", b'{"tenant_id": "x"}', b"[]", "other-tenant"])
def test_a_corrupt_cache_entry_is_a_miss_and_is_overwritten(
    service: RateLimitConfigService,
    backend: Backend,
    raw_redis: object,
    create_tenant: NewTenant,
    make_config: ConfigFactory,
    corrupt: bytes | str,
) -> None:
    tenant_id = create_tenant(backend.database_url)
    config = make_config(tenant_id)
    service.repository.upsert(config)
    if corrupt == "other-tenant":
        corrupt = make_config(uuid.uuid4()).model_dump_json().encode()
    raw_redis.set(cache_key(tenant_id), corrupt, ex=60)  # type: ignore[attr-defined]

    loaded = service.get_with_source(tenant_id)

    assert loaded == (config, "database")
    assert service.stats.corrupt_entries == 1
    stored = raw_redis.get(cache_key(tenant_id))  # type: ignore[attr-defined]
    assert TenantRateLimitConfiguration.model_validate_json(stored) == config


def test_l1_is_bounded_by_l1_maxsize(
    backend: Backend, manual_clock: ManualClock, create_tenant: NewTenant
) -> None:
    tenants = [create_tenant(backend.database_url) for _ in range(3)]
    with RateLimitConfigService.from_urls(
        backend.redis_url, backend.database_url, clock=manual_clock, subscribe=False, l1_maxsize=2
    ) as service:
        for tenant_id in tenants:
            service.get(tenant_id)

        assert service.get_with_source(tenants[0]).source == "redis"  # evicted from L1
        assert service.get_with_source(tenants[2]).source == "l1"


def test_stats_count_loads_by_source_and_call_the_load_hook(
    backend: Backend, manual_clock: ManualClock, create_tenant: NewTenant
) -> None:
    seen: list[tuple[uuid.UUID, str]] = []
    tenant_id = create_tenant(backend.database_url)
    with RateLimitConfigService.from_urls(
        backend.redis_url,
        backend.database_url,
        clock=manual_clock,
        subscribe=False,
        on_load=lambda tid, source: seen.append((tid, source)),
    ) as service:
        service.get(tenant_id)
        service.get(tenant_id)
        service.get(tenant_id)

        assert service.stats.loads["default"] == 1
        assert service.stats.loads["l1"] == 2
        assert service.stats.hit_rate == pytest.approx(2 / 3)
        assert seen == [(tenant_id, "default"), (tenant_id, "l1"), (tenant_id, "l1")]


def test_each_load_logs_its_source(
    service: RateLimitConfigService,
    backend: Backend,
    create_tenant: NewTenant,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tenant_id = create_tenant(backend.database_url)
    caplog.set_level("DEBUG", logger="llmproxy.ratelimit_config")

    service.get(tenant_id)
    service.get(tenant_id)

    messages = [r.getMessage() for r in caplog.records if r.name == "llmproxy.ratelimit_config"]
    assert any(m.endswith("loaded from default") for m in messages)
    assert any(m.endswith("loaded from l1") for m in messages)


def test_upsert_stores_and_the_writer_reads_its_own_write_at_once(
    service: RateLimitConfigService,
    backend: Backend,
    raw_redis: object,
    create_tenant: NewTenant,
    make_config: ConfigFactory,
) -> None:
    tenant_id = create_tenant(backend.database_url)
    assert service.get(tenant_id) == DEFAULTS.for_tenant(tenant_id)  # now cached in L1 and Redis
    config = make_config(tenant_id)

    service.upsert(config)

    assert raw_redis.get(cache_key(tenant_id)) is None  # type: ignore[attr-defined]
    assert service.get(tenant_id) == config
    assert service.repository.get_by_tenant_id(tenant_id) == config


def test_delete_returns_the_tenant_to_the_defaults(
    service: RateLimitConfigService, backend: Backend, create_tenant: NewTenant, make_config: ConfigFactory
) -> None:
    tenant_id = create_tenant(backend.database_url)
    service.upsert(make_config(tenant_id))
    assert service.get(tenant_id) == make_config(tenant_id)

    assert service.delete(tenant_id) is True

    assert service.get_with_source(tenant_id) == (DEFAULTS.for_tenant(tenant_id), "default")
    assert service.delete(tenant_id) is False


def test_list_returns_stored_configurations(
    service: RateLimitConfigService, backend: Backend, create_tenant: NewTenant, make_config: ConfigFactory
) -> None:
    configs = [make_config(create_tenant(backend.database_url), scale=s) for s in (2, 3)]
    for config in configs:
        service.upsert(config)

    assert sorted(service.list(), key=lambda c: str(c.tenant_id)) == sorted(
        configs, key=lambda c: str(c.tenant_id)
    )


def test_upsert_for_an_unknown_tenant_raises_and_invalidates_nothing(
    service: RateLimitConfigService, raw_redis: object, make_config: ConfigFactory
) -> None:
    tenant_id = uuid.uuid4()
    raw_redis.set(cache_key(tenant_id), b"sentinel")  # type: ignore[attr-defined]

    with pytest.raises(TenantNotFound):
        service.upsert(make_config(tenant_id))

    assert raw_redis.get(cache_key(tenant_id)) == b"sentinel"  # type: ignore[attr-defined]


def test_a_tenant_id_that_is_not_a_uuid_is_a_type_error(service: RateLimitConfigService) -> None:
    with pytest.raises(TypeError, match="uuid"):
        service.get("not-a-uuid")  # type: ignore[arg-type]


def wait_for(predicate: Callable[[], bool], deadline_seconds: float) -> bool:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_a_write_in_one_instance_drops_the_l1_of_another_within_a_second(
    backend: Backend, create_tenant: NewTenant, make_config: ConfigFactory
) -> None:
    tenant_id = create_tenant(backend.database_url)
    # A long L1 TTL: only an invalidation can make the reader see the write in time.
    with (
        RateLimitConfigService.from_urls(backend.redis_url, backend.database_url, l1_ttl=600) as writer,
        RateLimitConfigService.from_urls(backend.redis_url, backend.database_url, l1_ttl=600) as reader,
    ):
        assert reader.start(wait=5.0)
        assert reader.get(tenant_id) == DEFAULTS.for_tenant(tenant_id)
        assert reader.get_with_source(tenant_id).source == "l1"
        config = make_config(tenant_id)

        writer.upsert(config)

        assert wait_for(lambda: reader.get(tenant_id) == config, deadline_seconds=1.0)
        assert reader.stats.invalidations_received >= 1


def test_a_delete_in_one_instance_reaches_the_other(
    backend: Backend, create_tenant: NewTenant, make_config: ConfigFactory
) -> None:
    tenant_id = create_tenant(backend.database_url)
    with (
        RateLimitConfigService.from_urls(backend.redis_url, backend.database_url, l1_ttl=600) as writer,
        RateLimitConfigService.from_urls(backend.redis_url, backend.database_url, l1_ttl=600) as reader,
    ):
        writer.upsert(make_config(tenant_id))
        assert reader.start(wait=5.0)
        assert reader.get(tenant_id) == make_config(tenant_id)

        writer.delete(tenant_id)

        assert wait_for(lambda: reader.get(tenant_id) == DEFAULTS.for_tenant(tenant_id), deadline_seconds=1.0)


def test_the_subscriber_starts_lazily_on_the_first_get(backend: Backend, create_tenant: NewTenant) -> None:
    tenant_id = create_tenant(backend.database_url)
    with RateLimitConfigService.from_urls(backend.redis_url, backend.database_url) as service:
        assert not service.subscribed

        service.get(tenant_id)

        assert wait_for(lambda: service.subscribed, deadline_seconds=5.0)


@pytest.mark.slow
def test_the_service_works_on_redis_cluster_with_invalidation(
    redis_cluster_url: str, real_database_url: str, create_tenant: NewTenant, make_config: ConfigFactory
) -> None:
    tenant_id = create_tenant(real_database_url)
    with (
        RateLimitConfigService.from_urls(redis_cluster_url, real_database_url, l1_ttl=600) as writer,
        RateLimitConfigService.from_urls(redis_cluster_url, real_database_url, l1_ttl=600) as reader,
    ):
        assert reader.start(wait=10.0)
        assert reader.get_with_source(tenant_id).source == "default"
        reader.invalidate_local(tenant_id)
        assert reader.get_with_source(tenant_id).source == "redis"
        config = make_config(tenant_id)

        writer.upsert(config)

        assert wait_for(lambda: reader.get(tenant_id) == config, deadline_seconds=1.0)


def test_a_read_that_raced_a_write_caches_nothing_and_the_write_wins(
    service: RateLimitConfigService,
    backend: Backend,
    raw_redis: object,
    create_tenant: NewTenant,
    make_config: ConfigFactory,
) -> None:
    # White-box: the sans-IO flow lets the test put a write into the middle of a read, deterministically.
    from llmproxy.ratelimit_config._cache import DbGet, RedisFill, RedisRead

    tenant_id = create_tenant(backend.database_url)
    old, new = make_config(tenant_id, scale=2), make_config(tenant_id, scale=3)
    service.repository.upsert(old)
    flow = service._policy.get_flow(tenant_id)
    read = next(flow)
    assert isinstance(read, RedisRead)
    db_get = flow.send(service._perform(read))
    assert isinstance(db_get, DbGet)
    stale = service._perform(db_get)  # the reader has the old row in hand ...
    with RateLimitConfigService.from_urls(backend.redis_url, backend.database_url, subscribe=False) as writer:
        writer.upsert(new)  # ... when a write commits and invalidates
    fill = flow.send(stale)
    assert isinstance(fill, RedisFill)

    with pytest.raises(StopIteration) as done:
        flow.send(service._perform(fill))

    assert done.value.value.config == old  # this one call still answers with what it read
    assert raw_redis.get(cache_key(tenant_id)) is None  # type: ignore[attr-defined]
    assert service.get_with_source(tenant_id) == (new, "database")  # and L1 did not keep the old value


def test_model_limits_budgets_and_key_policies_reach_another_instance_unchanged_through_redis(
    backend: Backend, raw_redis: object, create_tenant: NewTenant, make_config: ConfigFactory
) -> None:
    tenant_id = create_tenant(backend.database_url)
    config = make_config(tenant_id)
    assert config.model_limits
    assert config.budgets
    assert config.api_keys
    open_service = functools.partial(
        RateLimitConfigService.from_urls, backend.redis_url, backend.database_url, subscribe=False
    )
    with open_service() as writer, open_service() as filler, open_service() as reader:
        writer.upsert(config)
        assert filler.get_with_source(tenant_id) == (config, "database")  # fills Redis

        from_redis = reader.get_with_source(tenant_id)
        from_l1 = reader.get_with_source(tenant_id)

    assert (from_redis.source, from_l1.source) == ("redis", "l1")
    assert from_redis.config == from_l1.config == config
    cached = json.loads(raw_redis.get(cache_key(tenant_id)))  # type: ignore[attr-defined]
    assert cached["model_limits"]["gpt-4o"] == {
        "requests_per_minute": 100,
        "tokens_per_minute": None,
        "tokens_per_day": 0,
    }
    assert cached["budgets"]["day"]["limit_micros"] == 50_000_000
    assert cached["api_keys"]["key-locked"]["allowed_models"] == []
    assert cached["api_keys"]["key-spend"]["allowed_models"] is None
