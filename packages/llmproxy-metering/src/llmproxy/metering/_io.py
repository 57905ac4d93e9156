"""Performing the flows' operations: one sync and one async performer, a few lines per operation."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from . import _repository as repo
from ._flush import (
    FlushOp,
    KnownTenants,
    ListTenants,
    LoadCursor,
    ReadDirtyHours,
    ReadDirtyTenants,
    RedisTimeMs,
    SaveCursor,
    UpsertHours,
)
from ._keys import DIRTY_TENANTS, dirty_key
from ._query import QueryOp, ReadBuckets, ReadCursor, ReadHours

DEFAULT_FLUSHER = "default"
#: How long a query process reuses the flusher's cursor. Safe: the cursor only moves forward, and an older one
#: only moves the split earlier, so a few more hours are read from Redis (which still holds them).
CURSOR_REUSE = 10.0


class _CursorCache:
    __slots__ = ("read_at", "value")

    def __init__(self) -> None:
        self.value: int | None = None
        self.read_at = float("-inf")

    def get(self) -> tuple[bool, int | None]:
        return time.monotonic() - self.read_at < CURSOR_REUSE, self.value

    def put(self, value: int | None) -> int | None:
        self.value, self.read_at = value, time.monotonic()
        return value


class SyncPerformer:
    def __init__(self, redis: Any, engine: Engine | None, flusher_name: str = DEFAULT_FLUSHER) -> None:
        self.redis = redis
        self.engine = engine
        self.flusher_name = flusher_name
        self._cursor = _CursorCache()

    def _engine(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("this metering client has no database engine (pass engine=...)")
        return self.engine

    def __call__(self, op: QueryOp | FlushOp) -> Any:
        redis = self.redis
        match op:
            case ReadBuckets(keys):
                pipe = redis.pipeline(transaction=False)
                for key in keys:
                    pipe.hgetall(key)
                return pipe.execute()
            case ReadDirtyHours(tenants, since):
                pipe = redis.pipeline(transaction=False)
                for tenant in tenants:
                    pipe.zrangebyscore(dirty_key(tenant), since, "+inf")
                return pipe.execute()
            case ReadDirtyTenants(since):
                return redis.zrangebyscore(DIRTY_TENANTS, since, "+inf")
            case RedisTimeMs():
                seconds, micros = redis.time()
                return int(seconds) * 1000 + int(micros) // 1000
            case ReadCursor():
                fresh, value = self._cursor.get()
                if fresh:
                    return value
                with self._engine().connect() as conn:
                    return self._cursor.put(repo.load_cursor(conn, self.flusher_name))
        with self._engine().begin() as conn:
            match op:
                case ReadHours(tenant, first, last, group_by, periods):
                    return repo.usage_rows(conn, tenant, first, last, group_by, periods)
                case LoadCursor(name):
                    return repo.load_cursor(conn, name)
                case SaveCursor(name, cursor):
                    return repo.save_cursor(conn, name, cursor)
                case UpsertHours(rows):
                    return repo.upsert_hours(conn, rows)
                case KnownTenants(tenants):
                    return repo.existing_tenants(conn, tenants)
                case ListTenants():
                    return repo.all_tenants(conn)
        raise AssertionError(f"unknown operation {op!r}")


class AsyncPerformer:
    def __init__(self, redis: Any, engine: AsyncEngine | None, flusher_name: str = DEFAULT_FLUSHER) -> None:
        self.redis = redis
        self.engine = engine
        self.flusher_name = flusher_name
        self._cursor = _CursorCache()

    def _engine(self) -> AsyncEngine:
        if self.engine is None:
            raise RuntimeError("this metering client has no database engine (pass engine=...)")
        return self.engine

    async def __call__(self, op: QueryOp | FlushOp) -> Any:
        redis = self.redis
        match op:
            case ReadBuckets(keys):
                async with redis.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.hgetall(key)
                    return await pipe.execute()
            case ReadDirtyHours(tenants, since):
                async with redis.pipeline(transaction=False) as pipe:
                    for tenant in tenants:
                        pipe.zrangebyscore(dirty_key(tenant), since, "+inf")
                    return await pipe.execute()
            case ReadDirtyTenants(since):
                return await redis.zrangebyscore(DIRTY_TENANTS, since, "+inf")
            case RedisTimeMs():
                seconds, micros = await redis.time()
                return int(seconds) * 1000 + int(micros) // 1000
            case ReadCursor():
                fresh, value = self._cursor.get()
                if fresh:
                    return value
                async with self._engine().connect() as conn:
                    return self._cursor.put(await conn.run_sync(repo.load_cursor, self.flusher_name))
        async with self._engine().begin() as conn:
            match op:
                case ReadHours(tenant, first, last, group_by, periods):
                    return await conn.run_sync(repo.usage_rows, tenant, first, last, group_by, periods)
                case LoadCursor(name):
                    return await conn.run_sync(repo.load_cursor, name)
                case SaveCursor(name, cursor):
                    return await conn.run_sync(repo.save_cursor, name, cursor)
                case UpsertHours(rows):
                    return await conn.run_sync(repo.upsert_hours, rows)
                case KnownTenants(tenants):
                    return await conn.run_sync(repo.existing_tenants, tenants)
                case ListTenants():
                    return await conn.run_sync(repo.all_tenants)
        raise AssertionError(f"unknown operation {op!r}")
