"""Failure behaviour with the services really cut (TcpProxy): get() never raises and degrades in order."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from llmproxy.core import ManualClock, redis_from_url
from llmproxy.core.testing import Backend
from llmproxy.ratelimit_config import (
    DEFAULTS,
    AsyncRateLimitConfigService,
    RateLimitConfigService,
    TenantRateLimitConfiguration,
    cache_key,
)

ConfigFactory = Callable[..., TenantRateLimitConfiguration]
NewTenant = Callable[[str], uuid.UUID]


@pytest.fixture
def service(proxied_backend: Backend, manual_clock: ManualClock) -> Iterator[RateLimitConfigService]:
    with RateLimitConfigService.from_urls(
        proxied_backend.redis_url, proxied_backend.database_url, clock=manual_clock, subscribe=False
    ) as service:
        yield service


@pytest.fixture
def configured_tenant(
    proxied_backend: Backend, real_backend: Backend, create_tenant: NewTenant, make_config: ConfigFactory
) -> TenantRateLimitConfiguration:
    config = make_config(create_tenant(real_backend.database_url))
    with RateLimitConfigService.from_urls(
        real_backend.redis_url, real_backend.database_url, subscribe=False
    ) as s:
        s.upsert(config)
    return config


def forget_redis_entry(real_backend: Backend, tenant_id: uuid.UUID) -> None:
    client = redis_from_url(real_backend.redis_url)
    client.delete(cache_key(tenant_id))
    client.close()


def cut(backend: Backend, *which: str) -> None:
    for name in which:
        proxy = backend.redis_proxy if name == "redis" else backend.database_proxy
        assert proxy is not None
        proxy.cut()


def test_with_redis_cut_the_service_reads_the_database(
    service: RateLimitConfigService, proxied_backend: Backend, configured_tenant: TenantRateLimitConfiguration
) -> None:
    cut(proxied_backend, "redis")

    loaded = service.get_with_source(configured_tenant.tenant_id)

    assert loaded == (configured_tenant, "database")
    assert service.stats.redis_errors >= 1


def test_with_redis_cut_writes_still_reach_the_database(
    service: RateLimitConfigService,
    proxied_backend: Backend,
    real_backend: Backend,
    create_tenant: NewTenant,
    make_config: ConfigFactory,
) -> None:
    config = make_config(create_tenant(real_backend.database_url))
    cut(proxied_backend, "redis")

    service.upsert(config)

    assert service.repository.get_by_tenant_id(config.tenant_id) == config


def test_with_the_database_cut_the_last_known_value_is_served(
    service: RateLimitConfigService,
    proxied_backend: Backend,
    real_backend: Backend,
    manual_clock: ManualClock,
    configured_tenant: TenantRateLimitConfiguration,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tenant_id = configured_tenant.tenant_id
    assert service.get(tenant_id) == configured_tenant
    forget_redis_entry(real_backend, tenant_id)
    manual_clock.advance(5.01)
    cut(proxied_backend, "database")

    loaded = service.get_with_source(tenant_id)

    assert loaded == (configured_tenant, "last_known")
    assert service.stats.database_errors == 1
    assert any(r.levelname == "WARNING" and "database unavailable" in r.getMessage() for r in caplog.records)


def test_with_the_database_cut_an_unseen_tenant_gets_the_defaults(
    service: RateLimitConfigService, proxied_backend: Backend, configured_tenant: TenantRateLimitConfiguration
) -> None:
    cut(proxied_backend, "database")

    loaded = service.get_with_source(configured_tenant.tenant_id)

    assert loaded == (DEFAULTS.for_tenant(configured_tenant.tenant_id), "default")


def test_with_the_database_cut_a_redis_entry_is_still_served(
    service: RateLimitConfigService,
    proxied_backend: Backend,
    manual_clock: ManualClock,
    configured_tenant: TenantRateLimitConfiguration,
) -> None:
    service.get(configured_tenant.tenant_id)
    manual_clock.advance(5.01)
    cut(proxied_backend, "database")

    assert service.get_with_source(configured_tenant.tenant_id) == (configured_tenant, "redis")


def test_with_both_cut_the_defaults_are_served_and_nothing_raises(
    service: RateLimitConfigService, proxied_backend: Backend, configured_tenant: TenantRateLimitConfiguration
) -> None:
    cut(proxied_backend, "redis", "database")

    loaded = service.get_with_source(configured_tenant.tenant_id)

    assert loaded == (DEFAULTS.for_tenant(configured_tenant.tenant_id), "default")
    assert service.stats.redis_errors >= 1
    assert service.stats.database_errors == 1


def test_with_both_cut_a_tenant_seen_before_keeps_its_last_known_value(
    service: RateLimitConfigService,
    proxied_backend: Backend,
    manual_clock: ManualClock,
    configured_tenant: TenantRateLimitConfiguration,
) -> None:
    service.get(configured_tenant.tenant_id)
    manual_clock.advance(5.01)
    cut(proxied_backend, "redis", "database")

    assert service.get_with_source(configured_tenant.tenant_id) == (configured_tenant, "last_known")


def test_during_an_outage_the_database_is_retried_only_after_the_retry_interval(
    service: RateLimitConfigService,
    proxied_backend: Backend,
    manual_clock: ManualClock,
    configured_tenant: TenantRateLimitConfiguration,
) -> None:
    cut(proxied_backend, "redis", "database")
    service.get(configured_tenant.tenant_id)
    other_tenant = uuid.uuid4()

    service.get(other_tenant)  # within the retry interval: not even tried
    assert service.stats.database_errors == 1
    manual_clock.advance(1.01)
    service.get(uuid.uuid4())
    assert service.stats.database_errors == 2


def test_after_the_outage_the_service_reads_the_database_again(
    service: RateLimitConfigService,
    proxied_backend: Backend,
    manual_clock: ManualClock,
    configured_tenant: TenantRateLimitConfiguration,
) -> None:
    cut(proxied_backend, "redis", "database")
    assert service.get_with_source(configured_tenant.tenant_id).source == "default"

    for proxy in (proxied_backend.redis_proxy, proxied_backend.database_proxy):
        assert proxy is not None
        proxy.restore()
    manual_clock.advance(1.01)  # past failure_ttl and the retry interval

    assert service.get_with_source(configured_tenant.tenant_id) == (configured_tenant, "database")


def test_a_write_with_the_database_cut_raises_and_changes_nothing(
    service: RateLimitConfigService,
    proxied_backend: Backend,
    real_backend: Backend,
    configured_tenant: TenantRateLimitConfiguration,
    make_config: ConfigFactory,
) -> None:
    cut(proxied_backend, "database")

    with pytest.raises(Exception, match=r"(?i)connect|closed|server"):
        service.upsert(make_config(configured_tenant.tenant_id, scale=99))

    with RateLimitConfigService.from_urls(
        real_backend.redis_url, real_backend.database_url, subscribe=False
    ) as s:
        assert s.repository.get_by_tenant_id(configured_tenant.tenant_id) == configured_tenant


async def test_async_service_with_both_cut_serves_the_defaults(
    proxied_backend: Backend, manual_clock: ManualClock, configured_tenant: TenantRateLimitConfiguration
) -> None:
    async with AsyncRateLimitConfigService.from_urls(
        proxied_backend.redis_url, proxied_backend.database_url, clock=manual_clock, subscribe=False
    ) as service:
        cut(proxied_backend, "redis", "database")

        loaded = await service.get_with_source(configured_tenant.tenant_id)

    assert loaded == (DEFAULTS.for_tenant(configured_tenant.tenant_id), "default")


def test_the_subscriber_survives_a_redis_cut_and_invalidates_again_after_it(
    proxied_backend: Backend, real_backend: Backend, configured_tenant: TenantRateLimitConfiguration,
    make_config: ConfigFactory,
) -> None:  # fmt: skip
    tenant_id = configured_tenant.tenant_id
    with (
        RateLimitConfigService.from_urls(
            proxied_backend.redis_url, proxied_backend.database_url, l1_ttl=600
        ) as reader,
        RateLimitConfigService.from_urls(
            real_backend.redis_url, real_backend.database_url, l1_ttl=600
        ) as writer,
    ):
        assert reader.start(wait=5.0)
        assert reader.get(tenant_id) == configured_tenant
        assert proxied_backend.redis_proxy is not None
        proxied_backend.redis_proxy.cut()
        assert wait_for(lambda: not reader.subscribed, 5.0)
        proxied_backend.redis_proxy.restore()
        assert wait_for(lambda: reader.subscribed, 5.0)
        updated = make_config(tenant_id, scale=42)

        writer.upsert(updated)

        assert wait_for(lambda: reader.get(tenant_id) == updated, 1.0)


def wait_for(predicate: Callable[[], bool], deadline_seconds: float) -> bool:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
