"""API key services: thin sync and async drivers around the flows of ``_keys.py``."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from redis.exceptions import RedisError
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
    redis_from_url,
)

from ._keys import (
    DEFAULT_PREFIX,
    REDIS_FAILED,
    ApiKeyCore,
    ApiKeyOptions,
    Flow,
    RedisCall,
    SqlFetch,
    SqlWrite,
)
from ._principal import Principal
from ._store import ApiKey, CreatedApiKey

logger = logging.getLogger("llmproxy.auth")

DEFAULT_SCOPES = ("api:access",)
E = TypeVar("E", Engine, AsyncEngine)
R = TypeVar("R")
#: Redis client options for services built from URLs: a cut connection must not hang a request.
REDIS_CLIENT_OPTIONS: dict[str, Any] = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}


def _redis_failed(op: RedisCall, exc: Exception) -> Any:
    logger.warning(
        "llmproxy.auth: Redis %s failed (%s); continuing without it", op.method, type(exc).__name__
    )
    return REDIS_FAILED


class _ApiKeyServiceBase(Generic[E, R]):
    """What both shells share: options, the core (L1, epoch, last-used buffer), the engine and the client."""

    def __init__(
        self,
        engine: E,
        redis: R,
        *,
        prefix: str = DEFAULT_PREFIX,
        pepper: bytes | None = None,
        l1_ttl: float = 30.0,
        redis_ttl: float = 300.0,
        negative_ttl: float = 30.0,
        sync_interval: float = 0.5,
        last_used_interval: float = 60.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        options = ApiKeyOptions(
            prefix=prefix,
            pepper=pepper,
            l1_ttl=l1_ttl,
            redis_ttl=redis_ttl,
            negative_ttl=negative_ttl,
            sync_interval=sync_interval,
            last_used_interval=last_used_interval,
        )
        self._core = ApiKeyCore(options, clock)
        self._engine: E = engine
        self._redis: R = redis
        self._owned = False

    @property
    def prefix(self) -> str:
        return self._core.options.prefix


class ApiKeyService(_ApiKeyServiceBase[Engine, SyncRedis]):
    """Create, verify, list and revoke API keys (sync). Verification goes L1 → Redis → PostgreSQL."""

    @classmethod
    def from_urls(cls, redis_url: str, database_url: str, **options: Any) -> ApiKeyService:
        """A service owning its engine and Redis client (``close()`` releases them)."""
        service = cls(
            create_engine(database_url), redis_from_url(redis_url, **REDIS_CLIENT_OPTIONS), **options
        )
        service._owned = True
        return service

    def _run(self, flow: Flow) -> Any:
        try:
            op = next(flow)
            while True:
                try:
                    result = self._do(op)
                except sa.exc.SQLAlchemyError as exc:
                    op = flow.throw(exc)
                    continue
                op = flow.send(result)
        except StopIteration as stop:
            return stop.value

    def _do(self, op: RedisCall | SqlFetch | SqlWrite) -> Any:
        if isinstance(op, RedisCall):
            try:
                return getattr(self._redis, op.method)(*op.args, **op.kwargs)
            except (RedisError, OSError) as exc:
                return _redis_failed(op, exc)
        if isinstance(op, SqlFetch):
            with self._engine.connect() as conn:
                return list(conn.execute(op.statement))
        with self._engine.begin() as conn:
            return (
                conn.execute(op.statement, op.params).rowcount
                if op.params
                else conn.execute(op.statement).rowcount
            )

    def create(
        self,
        tenant_id: uuid.UUID | str,
        name: str,
        *,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        expires_at: datetime | None = None,
    ) -> CreatedApiKey:
        """A new key for the tenant. ``.secret`` is returned this once; only its hash is stored."""
        result: CreatedApiKey = self._run(self._core.create(tenant_id, name, scopes, expires_at))
        return result

    def verify(self, secret: str) -> Principal:
        """The principal of a valid key; raises :class:`InvalidApiKey` (or a subclass) otherwise."""
        result: Principal = self._run(self._core.verify(secret))
        return result

    def revoke(self, key_id: uuid.UUID | str) -> None:
        """Revoke a key; every process sharing the Redis stops accepting it within ``sync_interval``."""
        self._run(self._core.revoke(key_id))

    def revoke_tenant(self, tenant_id: uuid.UUID | str) -> int:
        """Revoke every key of the tenant (call it before deleting the tenant); the number newly revoked.

        Every process sharing the Redis stops accepting them within ``sync_interval``; idempotent.
        """
        result: int = self._run(self._core.revoke_tenant(tenant_id))
        return result

    def get(self, key_id: uuid.UUID | str) -> ApiKey:
        result: ApiKey = self._run(self._core.get(key_id))
        return result

    def list(self, tenant_id: uuid.UUID | str) -> list[ApiKey]:
        result: list[ApiKey] = self._run(self._core.list(tenant_id))
        return result

    def flush_last_used(self) -> int:
        """Write buffered ``last_used_at`` values now (verification does it every ``last_used_interval``)."""
        result: int = self._run(self._core.flush_last_used())
        return result

    def close(self) -> None:
        self.flush_last_used()
        if self._owned:
            self._redis.close()
            self._engine.dispose()


class AsyncApiKeyService(_ApiKeyServiceBase[AsyncEngine, AsyncRedis]):
    """The asyncio twin of :class:`ApiKeyService` (same flows, same cache, same keys)."""

    @classmethod
    def from_urls(cls, redis_url: str, database_url: str, **options: Any) -> AsyncApiKeyService:
        service = cls(
            create_async_engine(database_url),
            async_redis_from_url(redis_url, **REDIS_CLIENT_OPTIONS),
            **options,
        )
        service._owned = True
        return service

    async def _run(self, flow: Flow) -> Any:
        try:
            op = next(flow)
            while True:
                try:
                    result = await self._do(op)
                except sa.exc.SQLAlchemyError as exc:
                    op = flow.throw(exc)
                    continue
                op = flow.send(result)
        except StopIteration as stop:
            return stop.value

    async def _do(self, op: RedisCall | SqlFetch | SqlWrite) -> Any:
        if isinstance(op, RedisCall):
            try:
                return await getattr(self._redis, op.method)(*op.args, **op.kwargs)
            except (RedisError, OSError) as exc:
                return _redis_failed(op, exc)
        if isinstance(op, SqlFetch):
            async with self._engine.connect() as conn:
                return list(await conn.execute(op.statement))
        async with self._engine.begin() as conn:
            if op.params:
                return (await conn.execute(op.statement, op.params)).rowcount
            return (await conn.execute(op.statement)).rowcount

    async def create(
        self,
        tenant_id: uuid.UUID | str,
        name: str,
        *,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        expires_at: datetime | None = None,
    ) -> CreatedApiKey:
        result: CreatedApiKey = await self._run(self._core.create(tenant_id, name, scopes, expires_at))
        return result

    async def verify(self, secret: str) -> Principal:
        result: Principal = await self._run(self._core.verify(secret))
        return result

    async def revoke(self, key_id: uuid.UUID | str) -> None:
        await self._run(self._core.revoke(key_id))

    async def revoke_tenant(self, tenant_id: uuid.UUID | str) -> int:
        result: int = await self._run(self._core.revoke_tenant(tenant_id))
        return result

    async def get(self, key_id: uuid.UUID | str) -> ApiKey:
        result: ApiKey = await self._run(self._core.get(key_id))
        return result

    async def list(self, tenant_id: uuid.UUID | str) -> list[ApiKey]:
        result: list[ApiKey] = await self._run(self._core.list(tenant_id))
        return result

    async def flush_last_used(self) -> int:
        result: int = await self._run(self._core.flush_last_used())
        return result

    async def aclose(self) -> None:
        await self.flush_last_used()
        if self._owned:
            await self._redis.aclose()
            await self._engine.dispose()
