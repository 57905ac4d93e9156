"""``RateLimitConfigService`` / ``AsyncRateLimitConfigService``: thin shells that perform a flow's I/O.

The policy is in ``_cache.py``; core's ``run_flow`` / ``arun_flow`` drive its flows with ``_perform`` below.
"""

from __future__ import annotations

import asyncio
import builtins
import uuid
from collections.abc import Callable
from typing import Any, ClassVar, Self

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from llmproxy.core import (
    AsyncRedis,
    SyncRedis,
    arun_flow,
    async_redis_from_url,
    create_async_engine,
    create_engine,
    fail_fast_redis_options,
    redis_from_url,
    run_flow,
)

from ._cache import (
    FILL_SCRIPT,
    INVALIDATE_SCRIPT,
    CachePolicy,
    CacheStats,
    DbDelete,
    DbGet,
    DbUpsert,
    Loaded,
    Operation,
    RedisFill,
    RedisInvalidate,
    RedisPublish,
    RedisRead,
)
from ._defaults import RateLimitDefaults
from ._models import TenantRateLimitConfiguration
from ._options import RateLimitConfigOptions
from ._repository import AsyncRateLimitConfigRepository, RateLimitConfigRepository
from ._subscriber import AsyncSubscriber
from ._subscriber_sync import Subscriber


class _ServiceBase:
    """What both services hold: the options, the cache policy and the two scripts; ``from_urls``."""

    # the client factories of from_urls: redis_from_url / create_engine, or their asyncio twins
    _redis_from_url: ClassVar[Callable[..., SyncRedis | AsyncRedis]]
    _create_engine: ClassVar[Callable[..., Engine | AsyncEngine]]

    def __init__(
        self, redis: Any, engine: Any, *, options: RateLimitConfigOptions | None, **overrides: Any
    ) -> None:
        self.options = RateLimitConfigOptions.build(options, overrides)
        self._policy = CachePolicy(self.options)
        scripts: Any = redis  # Redis or RedisCluster: both register scripts (the stubs name only Redis)
        self._fill = scripts.register_script(FILL_SCRIPT)
        self._invalidate = scripts.register_script(INVALIDATE_SCRIPT)
        self._owned = False

    @classmethod
    def from_urls(
        cls,
        redis_url: str,
        database_url: str,
        *,
        redis_options: dict[str, Any] | None = None,
        engine_options: dict[str, Any] | None = None,
        options: RateLimitConfigOptions | None = None,
        **overrides: Any,
    ) -> Self:
        """A service owning its clients (``close()`` / ``aclose()`` closes them).

        The Redis client gets core's ``fail_fast_redis_options`` (a cache that waits seconds for a dead Redis
        is worse than no cache); ``redis_options`` override them. ``options`` / ``overrides``: as for the
        constructor, validated before any client is made.
        """
        options = RateLimitConfigOptions.build(options, overrides)
        redis = cls._redis_from_url(
            redis_url, **{**fail_fast_redis_options(redis_url), **(redis_options or {})}
        )
        service = cls(redis, cls._create_engine(database_url, **(engine_options or {})), options=options)
        service._owned = True
        return service

    @property
    def stats(self) -> CacheStats:
        """Loads by source (``l1``, ``redis``, ``database``, ``default``, ``last_known``) and failures."""
        return self._policy.stats

    @property
    def defaults(self) -> RateLimitDefaults:
        return self.options.defaults

    def invalidate_local(self, tenant_id: uuid.UUID | None = None) -> None:
        """Drop this process's L1 entry of one tenant (or of all). Other processes are not told."""
        self._policy.forget(tenant_id)


class RateLimitConfigService(_ServiceBase):
    """Per-tenant rate-limit configuration with an in-process L1, a Redis cache, the database and defaults.

    ``get`` never raises for backend failures. Writes go to the database, then delete the Redis entry and
    publish an invalidation that every instance's subscriber thread turns into an L1 drop. Settings come as
    ``options=RateLimitConfigOptions(...)``, or as its field names (``l1_ttl=600``), or both (names win).
    """

    _redis_from_url = staticmethod(redis_from_url)
    _create_engine = staticmethod(create_engine)

    def __init__(
        self,
        redis: SyncRedis,
        engine: Engine,
        *,
        options: RateLimitConfigOptions | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(redis, engine, options=options, **overrides)
        self.redis = redis
        self.repository = RateLimitConfigRepository(engine)
        self._subscriber = Subscriber(
            redis, self.options.channel, self._policy.on_invalidation, self._policy.on_subscribed
        )

    # -- lifecycle

    def start(self, *, wait: float | None = None) -> bool:
        """Start the invalidation subscriber (``get`` starts it lazily); ``wait``: block until subscribed."""
        self._subscriber.start()
        return self._subscriber.subscribed.wait(wait) if wait else self._subscriber.subscribed.is_set()

    @property
    def subscribed(self) -> bool:
        return self._subscriber.subscribed.is_set()

    def close(self) -> None:
        self._subscriber.stop()
        if self._owned:
            self.redis.close()
            self.repository.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- API

    def get(self, tenant_id: uuid.UUID) -> TenantRateLimitConfiguration:
        """The tenant's configuration (or the defaults). Never raises for Redis or database failures."""
        return self.get_with_source(tenant_id).config

    def get_with_source(self, tenant_id: uuid.UUID) -> Loaded:
        """``(config, source)``; source is ``l1``, ``redis``, ``database``, ``default`` or ``last_known``."""
        hit = self._policy.l1_lookup(tenant_id)
        if hit is not None:
            return hit
        if self.options.subscribe and not self._subscriber.running:
            self._subscriber.start()
        return run_flow(self._policy.get_flow(tenant_id), self._perform)

    def upsert(self, config: TenantRateLimitConfiguration) -> TenantRateLimitConfiguration:
        """Store the configuration and invalidate every cache of it. Database errors propagate."""
        return run_flow(self._policy.upsert_flow(config), self._perform)

    def delete(self, tenant_id: uuid.UUID) -> bool:
        """Remove the tenant's configuration (it gets the defaults again); True if there was one."""
        return run_flow(self._policy.delete_flow(tenant_id), self._perform)

    def list(self, *, limit: int = 100, offset: int = 0) -> builtins.list[TenantRateLimitConfiguration]:
        """Stored configurations, paginated, straight from the database."""
        return self.repository.list(limit=limit, offset=offset)

    # -- I/O

    def _perform(self, op: Operation) -> Any:
        match op:
            case RedisRead(key, vkey):
                return self.redis.mget(key, vkey)
            case RedisFill(key, vkey, seen, value, ttl):
                return self._fill(keys=[key, vkey], args=[seen, value, ttl])
            case RedisInvalidate(key, vkey, token, ttl):
                return self._invalidate(keys=[key, vkey], args=[token, ttl])
            case RedisPublish(channel, message):
                return self.redis.publish(channel, message)
            case DbGet(tenant_id):
                return self.repository.get_by_tenant_id(tenant_id)
            case DbUpsert(config):
                return self.repository.upsert(config)
            case DbDelete(tenant_id):
                return self.repository.delete(tenant_id)
        raise AssertionError(f"unknown operation {op!r}")


class AsyncRateLimitConfigService(_ServiceBase):
    """The asyncio twin of :class:`RateLimitConfigService` (its subscriber is an asyncio task)."""

    _redis_from_url = staticmethod(async_redis_from_url)
    _create_engine = staticmethod(create_async_engine)

    def __init__(
        self,
        redis: AsyncRedis,
        engine: AsyncEngine,
        *,
        options: RateLimitConfigOptions | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(redis, engine, options=options, **overrides)
        self.redis = redis
        self.repository = AsyncRateLimitConfigRepository(engine)
        self._subscriber = AsyncSubscriber(
            redis, self.options.channel, self._policy.on_invalidation, self._policy.on_subscribed
        )

    async def start(self, *, wait: float | None = None) -> bool:
        """Start the invalidation subscriber (``get`` starts it lazily); ``wait``: until subscribed."""
        self._subscriber.start()
        if wait:
            try:
                async with asyncio.timeout(wait):
                    await self._subscriber.subscribed.wait()
            except TimeoutError:
                return False
        return self._subscriber.subscribed.is_set()

    @property
    def subscribed(self) -> bool:
        return self._subscriber.subscribed.is_set()

    async def aclose(self) -> None:
        await self._subscriber.stop()
        if self._owned:
            await self.redis.aclose()
            await self.repository.engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def get(self, tenant_id: uuid.UUID) -> TenantRateLimitConfiguration:
        """The tenant's configuration (or the defaults). Never raises for Redis or database failures."""
        return (await self.get_with_source(tenant_id)).config

    async def get_with_source(self, tenant_id: uuid.UUID) -> Loaded:
        """``(config, source)``; source is ``l1``, ``redis``, ``database``, ``default`` or ``last_known``."""
        hit = self._policy.l1_lookup(tenant_id)
        if hit is not None:
            return hit
        if self.options.subscribe and not self._subscriber.running:
            self._subscriber.start()
        return await arun_flow(self._policy.get_flow(tenant_id), self._perform)

    async def upsert(self, config: TenantRateLimitConfiguration) -> TenantRateLimitConfiguration:
        """Store the configuration and invalidate every cache of it. Database errors propagate."""
        return await arun_flow(self._policy.upsert_flow(config), self._perform)

    async def delete(self, tenant_id: uuid.UUID) -> bool:
        """Remove the tenant's configuration (it gets the defaults again); True if there was one."""
        return await arun_flow(self._policy.delete_flow(tenant_id), self._perform)

    async def list(self, *, limit: int = 100, offset: int = 0) -> builtins.list[TenantRateLimitConfiguration]:
        """Stored configurations, paginated, straight from the database."""
        return await self.repository.list(limit=limit, offset=offset)

    async def _perform(self, op: Operation) -> Any:
        match op:
            case RedisRead(key, vkey):
                return await self.redis.mget(key, vkey)
            case RedisFill(key, vkey, seen, value, ttl):
                return await self._fill(keys=[key, vkey], args=[seen, value, ttl])
            case RedisInvalidate(key, vkey, token, ttl):
                return await self._invalidate(keys=[key, vkey], args=[token, ttl])
            case RedisPublish(channel, message):
                publisher: Any = self.redis  # RedisCluster publishes too (not in redis-py's async stubs)
                return await publisher.publish(channel, message)
            case DbGet(tenant_id):
                return await self.repository.get_by_tenant_id(tenant_id)
            case DbUpsert(config):
                return await self.repository.upsert(config)
            case DbDelete(tenant_id):
                return await self.repository.delete(tenant_id)
        raise AssertionError(f"unknown operation {op!r}")
