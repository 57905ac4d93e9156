"""AsyncRateLimitConfigService: the same policy as the sync service, through asyncio clients."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from llmproxy.core import ManualClock, TenantNotFound
from llmproxy.core.testing import Backend
from llmproxy.ratelimit_config import DEFAULTS, AsyncRateLimitConfigService, TenantRateLimitConfiguration

ConfigFactory = Callable[..., TenantRateLimitConfiguration]
NewTenant = Callable[[str], uuid.UUID]


@pytest.fixture
async def service(backend: Backend, manual_clock: ManualClock) -> AsyncIterator[AsyncRateLimitConfigService]:
    async with AsyncRateLimitConfigService.from_urls(
        backend.redis_url, backend.database_url, clock=manual_clock, subscribe=False
    ) as service:
        yield service


async def test_async_loads_walk_database_then_l1_then_redis(
    service: AsyncRateLimitConfigService,
    backend: Backend,
    manual_clock: ManualClock,
    create_tenant: NewTenant,
    make_config: ConfigFactory,
) -> None:
    tenant_id = create_tenant(backend.database_url)
    config = make_config(tenant_id)
    await service.repository.upsert(config)

    sources = [(await service.get_with_source(tenant_id)).source for _ in range(2)]
    manual_clock.advance(5.01)
    sources.append((await service.get_with_source(tenant_id)).source)

    assert sources == ["database", "l1", "redis"]
    assert await service.get(tenant_id) == config


async def test_async_tenant_without_a_row_gets_the_defaults(
    service: AsyncRateLimitConfigService, backend: Backend, create_tenant: NewTenant
) -> None:
    tenant_id = create_tenant(backend.database_url)

    assert await service.get_with_source(tenant_id) == (DEFAULTS.for_tenant(tenant_id), "default")


async def test_async_upsert_delete_and_list(
    service: AsyncRateLimitConfigService,
    backend: Backend,
    create_tenant: NewTenant,
    make_config: ConfigFactory,
) -> None:
    tenant_id = create_tenant(backend.database_url)
    await service.get(tenant_id)
    config = make_config(tenant_id)

    await service.upsert(config)
    assert await service.get(tenant_id) == config
    assert await service.list() == [config]

    assert await service.delete(tenant_id) is True
    assert await service.get(tenant_id) == DEFAULTS.for_tenant(tenant_id)


async def test_async_upsert_for_an_unknown_tenant_raises(
    service: AsyncRateLimitConfigService, make_config: ConfigFactory
) -> None:
    with pytest.raises(TenantNotFound):
        await service.upsert(make_config(uuid.uuid4()))


async def wait_for(predicate: Callable[[], Awaitable[bool]], deadline_seconds: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_seconds
    while loop.time() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.01)
    return await predicate()


async def test_async_write_drops_the_l1_of_another_instance_within_a_second(
    backend: Backend, create_tenant: NewTenant, make_config: ConfigFactory
) -> None:
    tenant_id = create_tenant(backend.database_url)
    async with (
        AsyncRateLimitConfigService.from_urls(backend.redis_url, backend.database_url, l1_ttl=600) as writer,
        AsyncRateLimitConfigService.from_urls(backend.redis_url, backend.database_url, l1_ttl=600) as reader,
    ):
        assert await reader.start(wait=5.0)
        assert await reader.get(tenant_id) == DEFAULTS.for_tenant(tenant_id)
        config = make_config(tenant_id)

        await writer.upsert(config)

        async def reader_sees_it() -> bool:
            return await reader.get(tenant_id) == config

        assert await wait_for(reader_sees_it, deadline_seconds=1.0)


async def test_async_subscriber_starts_lazily_and_stops_on_aclose(
    backend: Backend, create_tenant: NewTenant
) -> None:
    tenant_id = create_tenant(backend.database_url)
    service = AsyncRateLimitConfigService.from_urls(backend.redis_url, backend.database_url)
    assert not service.subscribed

    await service.get(tenant_id)

    async def subscribed() -> bool:
        return service.subscribed

    assert await wait_for(subscribed, deadline_seconds=5.0)
    await service.aclose()
    assert not service._subscriber.running


async def test_async_model_limits_budgets_and_key_policies_reach_another_instance_through_redis(
    backend: Backend, create_tenant: NewTenant, make_config: ConfigFactory
) -> None:
    tenant_id = create_tenant(backend.database_url)
    config = make_config(tenant_id)
    urls = (backend.redis_url, backend.database_url)
    async with (
        AsyncRateLimitConfigService.from_urls(*urls, subscribe=False) as writer,
        AsyncRateLimitConfigService.from_urls(*urls, subscribe=False) as filler,
        AsyncRateLimitConfigService.from_urls(*urls, subscribe=False) as reader,
    ):
        await writer.upsert(config)
        assert await filler.get_with_source(tenant_id) == (config, "database")

        from_redis = await reader.get_with_source(tenant_id)
        from_l1 = await reader.get_with_source(tenant_id)

    assert (from_redis.source, from_l1.source) == ("redis", "l1")
    assert from_redis.config == from_l1.config == config
