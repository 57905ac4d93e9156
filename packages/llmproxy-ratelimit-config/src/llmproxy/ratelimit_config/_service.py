"""``RateLimitConfigService`` / ``AsyncRateLimitConfigService``: thin shells that perform a flow's I/O."""

from __future__ import annotations

import asyncio
import builtins
import uuid
from typing import Any, Self, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from llmproxy.core import (
    SYSTEM_CLOCK,
    AsyncRedis,
    Clock,
    SyncRedis,
    async_redis_from_url,
    create_async_engine,
    create_engine,
    is_memory_url,
    redis_from_url,
)

from ._cache import (
    FILL_SCRIPT,
    INVALIDATE_SCRIPT,
    INVALIDATION_CHANNEL,
    CachePolicy,
    CacheStats,
    DbDelete,
    DbGet,
    DbUpsert,
    Flow,
    Loaded,
    LoadHook,
    Operation,
    RedisFill,
    RedisInvalidate,
    RedisPublish,
    RedisRead,
)
from ._defaults import DEFAULTS, RateLimitDefaults
from ._models import TenantRateLimitConfiguration
from ._repository import AsyncRateLimitConfigRepository, RateLimitConfigRepository
from ._subscriber import TaskSubscriber, ThreadSubscriber

R = TypeVar("R")


def _redis_options(url: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """Fail fast on a real server: a cache that waits seconds for a dead Redis is worse than no cache."""
    if is_memory_url(url):
        return dict(options or {})
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return {
        "socket_timeout": 0.5,
        "socket_connect_timeout": 0.5,
        "retry": Retry(NoBackoff(), 1),
        **(options or {}),
    }


class _ServiceBase:
    def __init__(
        self,
        *,
        defaults: RateLimitDefaults,
        l1_ttl: float,
        l1_maxsize: int,
        clock: Clock,
        redis_ttl: int,
        failure_ttl: float,
        retry_interval: float,
        channel: str,
        on_load: LoadHook | None,
    ) -> None:
        self._policy = CachePolicy(
            defaults=defaults,
            clock=clock,
            l1_ttl=l1_ttl,
            l1_maxsize=l1_maxsize,
            redis_ttl=redis_ttl,
            failure_ttl=failure_ttl,
            retry_interval=retry_interval,
            channel=channel,
            on_load=on_load,
        )
        self._owned = False

    @property
    def stats(self) -> CacheStats:
        """Loads by source (``l1``, ``redis``, ``database``, ``default``, ``last_known``) and failures."""
        return self._policy.stats

    @property
    def defaults(self) -> RateLimitDefaults:
        return self._policy.defaults

    def invalidate_local(self, tenant_id: uuid.UUID | None = None) -> None:
        """Drop this process's L1 entry of one tenant (or of all). Other processes are not told."""
        self._policy.forget(tenant_id)


class RateLimitConfigService(_ServiceBase):
    """Per-tenant rate-limit configuration with an in-process L1, a Redis cache, the database and defaults.

    ``get`` never raises for backend failures. Writes go to the database, then delete the Redis entry and
    publish an invalidation that every instance's subscriber thread turns into an L1 drop.
    """

    def __init__(
        self,
        redis: SyncRedis,
        engine: Engine,
        *,
        defaults: RateLimitDefaults = DEFAULTS,
        l1_ttl: float = 5.0,
        l1_maxsize: int = 10_000,
        clock: Clock = SYSTEM_CLOCK,
        redis_ttl: int = 60,
        failure_ttl: float = 1.0,
        retry_interval: float = 1.0,
        channel: str = INVALIDATION_CHANNEL,
        on_load: LoadHook | None = None,
        subscribe: bool = True,
    ) -> None:
        super().__init__(
            defaults=defaults,
            l1_ttl=l1_ttl,
            l1_maxsize=l1_maxsize,
            clock=clock,
            redis_ttl=redis_ttl,
            failure_ttl=failure_ttl,
            retry_interval=retry_interval,
            channel=channel,
            on_load=on_load,
        )
        self.redis = redis
        scripts: Any = redis  # Redis or RedisCluster: both register scripts (the stubs name only Redis)
        self._fill = scripts.register_script(FILL_SCRIPT)
        self._invalidate = scripts.register_script(INVALIDATE_SCRIPT)
        self.repository = RateLimitConfigRepository(engine)
        self._subscribe = subscribe
        self._subscriber = ThreadSubscriber(
            redis, channel, self._policy.on_invalidation, self._policy.on_subscribed
        )

    @classmethod
    def from_urls(
        cls,
        redis_url: str,
        database_url: str,
        *,
        redis_options: dict[str, Any] | None = None,
        engine_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> Self:
        """A service owning its clients (``close()`` closes them)."""
        redis = redis_from_url(redis_url, **_redis_options(redis_url, redis_options))
        service = cls(redis, create_engine(database_url, **(engine_options or {})), **options)
        service._owned = True
        return service

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
        if self._subscribe and not self._subscriber.running:
            self._subscriber.start()
        return self._run(self._policy.get_flow(tenant_id))

    def upsert(self, config: TenantRateLimitConfiguration) -> TenantRateLimitConfiguration:
        """Store the configuration and invalidate every cache of it. Database errors propagate."""
        return self._run(self._policy.upsert_flow(config))

    def delete(self, tenant_id: uuid.UUID) -> bool:
        """Remove the tenant's configuration (it gets the defaults again); True if there was one."""
        return self._run(self._policy.delete_flow(tenant_id))

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

    def _run(self, flow: Flow[R]) -> R:
        try:
            op = next(flow)
            while True:
                try:
                    result = self._perform(op)
                except Exception as exc:
                    op = flow.throw(exc)
                else:
                    op = flow.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


class AsyncRateLimitConfigService(_ServiceBase):
    """The asyncio twin of :class:`RateLimitConfigService` (its subscriber is an asyncio task)."""

    def __init__(
        self,
        redis: AsyncRedis,
        engine: AsyncEngine,
        *,
        defaults: RateLimitDefaults = DEFAULTS,
        l1_ttl: float = 5.0,
        l1_maxsize: int = 10_000,
        clock: Clock = SYSTEM_CLOCK,
        redis_ttl: int = 60,
        failure_ttl: float = 1.0,
        retry_interval: float = 1.0,
        channel: str = INVALIDATION_CHANNEL,
        on_load: LoadHook | None = None,
        subscribe: bool = True,
    ) -> None:
        super().__init__(
            defaults=defaults,
            l1_ttl=l1_ttl,
            l1_maxsize=l1_maxsize,
            clock=clock,
            redis_ttl=redis_ttl,
            failure_ttl=failure_ttl,
            retry_interval=retry_interval,
            channel=channel,
            on_load=on_load,
        )
        self.redis = redis
        scripts: Any = redis  # Redis or RedisCluster: both register scripts (the stubs name only Redis)
        self._fill = scripts.register_script(FILL_SCRIPT)
        self._invalidate = scripts.register_script(INVALIDATE_SCRIPT)
        self.repository = AsyncRateLimitConfigRepository(engine)
        self._subscribe = subscribe
        self._subscriber = TaskSubscriber(
            redis, channel, self._policy.on_invalidation, self._policy.on_subscribed
        )

    @classmethod
    def from_urls(
        cls,
        redis_url: str,
        database_url: str,
        *,
        redis_options: dict[str, Any] | None = None,
        engine_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> Self:
        """A service owning its clients (``aclose()`` closes them)."""
        redis = async_redis_from_url(redis_url, **_redis_options(redis_url, redis_options))
        service = cls(redis, create_async_engine(database_url, **(engine_options or {})), **options)
        service._owned = True
        return service

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
        if self._subscribe and not self._subscriber.running:
            self._subscriber.start()
        return await self._run(self._policy.get_flow(tenant_id))

    async def upsert(self, config: TenantRateLimitConfiguration) -> TenantRateLimitConfiguration:
        """Store the configuration and invalidate every cache of it. Database errors propagate."""
        return await self._run(self._policy.upsert_flow(config))

    async def delete(self, tenant_id: uuid.UUID) -> bool:
        """Remove the tenant's configuration (it gets the defaults again); True if there was one."""
        return await self._run(self._policy.delete_flow(tenant_id))

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

    async def _run(self, flow: Flow[R]) -> R:
        try:
            op = next(flow)
            while True:
                try:
                    result = await self._perform(op)
                except Exception as exc:
                    op = flow.throw(exc)
                else:
                    op = flow.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
