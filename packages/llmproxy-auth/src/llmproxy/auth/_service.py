"""API key services: thin sync and async shells that perform the operations of the flows in ``_keys.py``."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Generic, Self, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from llmproxy.core import (
    SYSTEM_CLOCK,
    AsyncRedis,
    Clock,
    SyncRedis,
    arun_flow,
    async_redis_from_url,
    create_async_engine,
    create_engine,
    fail_fast_redis_options,
    redis_from_url,
    run_flow,
)

from ._keys import (
    ApiKeyCore,
    ApiKeyOptions,
    Operation,
    RedisGet,
    RedisIncr,
    RedisSet,
    SqlFetch,
    SqlWrite,
)
from ._principal import Principal
from ._store import ApiKey, CreatedApiKey

DEFAULT_SCOPES = ("api:access",)
E = TypeVar("E", Engine, AsyncEngine)
R = TypeVar("R")


class _ApiKeyServiceBase(Generic[E, R]):
    """What both shells share: the options, the core (L1, epoch, last-used buffer), the engine and client."""

    def __init__(
        self,
        engine: E,
        redis: R,
        *,
        options: ApiKeyOptions | None = None,
        clock: Clock = SYSTEM_CLOCK,
        **overrides: Any,
    ) -> None:
        self._core = ApiKeyCore(ApiKeyOptions.build(options, overrides), clock)
        self._engine: E = engine
        self._redis: R = redis
        self._owned = False

    @classmethod
    def from_urls(cls, redis_url: str, database_url: str, **options: Any) -> Self:
        """A service owning its engine and Redis client (``close()`` / ``aclose()`` releases them).

        The client fails fast (core's ``fail_fast_redis_options``): verification falls back to the database
        rather than wait for a dead Redis. ``options``: ``options=``, ``clock=`` or any option by name.
        """
        engine, redis = cls._clients(redis_url, database_url)
        service = cls(engine, redis, **options)
        service._owned = True
        return service

    @classmethod
    def _clients(cls, redis_url: str, database_url: str) -> tuple[E, R]:
        raise NotImplementedError

    @property
    def options(self) -> ApiKeyOptions:
        return self._core.options

    @property
    def prefix(self) -> str:
        return self._core.options.prefix


class ApiKeyService(_ApiKeyServiceBase[Engine, SyncRedis]):
    """Create, verify, list and revoke API keys (sync). Verification goes L1 → Redis → PostgreSQL."""

    @classmethod
    def _clients(cls, redis_url: str, database_url: str) -> tuple[Engine, SyncRedis]:
        return create_engine(database_url), redis_from_url(redis_url, **fail_fast_redis_options(redis_url))

    def _perform(self, op: Operation) -> Any:
        match op:
            case RedisGet(key):
                return self._redis.get(key)
            case RedisSet(key, value, px, nx):
                return self._redis.set(key, value, px=px, nx=nx)
            case RedisIncr(key):
                return self._redis.incr(key)
            case SqlFetch(statement):
                with self._engine.connect() as conn:
                    return list(conn.execute(statement))
            case SqlWrite(statement, params):
                with self._engine.begin() as conn:
                    return conn.execute(statement, params).rowcount
        raise AssertionError(f"unknown operation {op!r}")

    def create(
        self,
        tenant_id: uuid.UUID | str,
        name: str,
        *,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        expires_at: datetime | None = None,
    ) -> CreatedApiKey:
        """A new key for the tenant. ``.secret`` is returned this once; only its hash is stored."""
        return run_flow(self._core.create(tenant_id, name, scopes, expires_at), self._perform)

    def verify(self, secret: str) -> Principal:
        """The principal of a valid key; raises :class:`InvalidApiKey` (or a subclass) otherwise."""
        return run_flow(self._core.verify(secret), self._perform)

    def revoke(self, key_id: uuid.UUID | str) -> None:
        """Revoke a key; every process sharing the Redis stops accepting it within ``sync_interval``."""
        run_flow(self._core.revoke(key_id), self._perform)

    def revoke_tenant(self, tenant_id: uuid.UUID | str) -> int:
        """Revoke every key of the tenant (call it before deleting the tenant); the number newly revoked.

        Every process sharing the Redis stops accepting them within ``sync_interval``; idempotent.
        """
        return run_flow(self._core.revoke_tenant(tenant_id), self._perform)

    def get(self, key_id: uuid.UUID | str) -> ApiKey:
        return run_flow(self._core.get(key_id), self._perform)

    def list(self, tenant_id: uuid.UUID | str) -> list[ApiKey]:
        return run_flow(self._core.list(tenant_id), self._perform)

    def flush_last_used(self) -> int:
        """Write buffered ``last_used_at`` values now (verification does it every ``last_used_interval``)."""
        return run_flow(self._core.flush_last_used(), self._perform)

    def close(self) -> None:
        self.flush_last_used()
        if self._owned:
            self._redis.close()
            self._engine.dispose()


class AsyncApiKeyService(_ApiKeyServiceBase[AsyncEngine, AsyncRedis]):
    """The asyncio twin of :class:`ApiKeyService` (same flows, same cache, same keys)."""

    @classmethod
    def _clients(cls, redis_url: str, database_url: str) -> tuple[AsyncEngine, AsyncRedis]:
        return create_async_engine(database_url), async_redis_from_url(
            redis_url, **fail_fast_redis_options(redis_url)
        )

    async def _perform(self, op: Operation) -> Any:
        match op:
            case RedisGet(key):
                return await self._redis.get(key)
            case RedisSet(key, value, px, nx):
                return await self._redis.set(key, value, px=px, nx=nx)
            case RedisIncr(key):
                return await self._redis.incr(key)
            case SqlFetch(statement):
                async with self._engine.connect() as conn:
                    return list(await conn.execute(statement))
            case SqlWrite(statement, params):
                async with self._engine.begin() as conn:
                    return (await conn.execute(statement, params)).rowcount
        raise AssertionError(f"unknown operation {op!r}")

    async def create(
        self,
        tenant_id: uuid.UUID | str,
        name: str,
        *,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        expires_at: datetime | None = None,
    ) -> CreatedApiKey:
        return await arun_flow(self._core.create(tenant_id, name, scopes, expires_at), self._perform)

    async def verify(self, secret: str) -> Principal:
        return await arun_flow(self._core.verify(secret), self._perform)

    async def revoke(self, key_id: uuid.UUID | str) -> None:
        await arun_flow(self._core.revoke(key_id), self._perform)

    async def revoke_tenant(self, tenant_id: uuid.UUID | str) -> int:
        return await arun_flow(self._core.revoke_tenant(tenant_id), self._perform)

    async def get(self, key_id: uuid.UUID | str) -> ApiKey:
        return await arun_flow(self._core.get(key_id), self._perform)

    async def list(self, tenant_id: uuid.UUID | str) -> list[ApiKey]:
        return await arun_flow(self._core.list(tenant_id), self._perform)

    async def flush_last_used(self) -> int:
        return await arun_flow(self._core.flush_last_used(), self._perform)

    async def aclose(self) -> None:
        await self.flush_last_used()
        if self._owned:
            await self._redis.aclose()
            await self._engine.dispose()
