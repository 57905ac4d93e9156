"""``FlagsClient`` / ``AsyncFlagsClient``: an ``Evaluator`` kept current by a background subscriber, and the
writes. Thin shells: what to do is decided by the ``Distributor``'s flows; these perform the I/O.

Evaluating is synchronous in both (it is pure); only loading and writing differ. The background work (a
thread, or an asyncio task) starts on ``start()`` or on first use, and again in a forked child on its
first use (``os.register_at_fork``), since threads and tasks do not survive a fork.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any, Self, TypeVar, cast

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from llmproxy.core import (
    SYSTEM_CLOCK,
    AsyncRedis,
    Clock,
    Flow,
    SyncRedis,
    arun_flow,
    async_redis_from_url,
    cancel_and_wait,
    create_async_engine,
    create_engine,
    fail_fast_redis_options,
    raise_if_cancelling,
    redis_from_url,
    run_flow,
)

from ._distribution import (
    FILL_SCRIPT,
    DbDelete,
    DbDeleteSegment,
    DbLoad,
    DbPut,
    DbPutSegment,
    DbToken,
    Distributor,
    FlagsOptions,
    FlagsStats,
    FlagsStatus,
    Operation,
    RedisFill,
    RedisPublish,
    RedisRead,
    RedisVersion,
    read_reply,
)
from ._evaluator import Evaluator
from ._models import Feature, Flag, Segment
from ._repository import AsyncFlagRepository, FlagRepository, StoredFlag
from ._snapshot import Snapshot

logger = logging.getLogger("llmproxy.flags")
R = TypeVar("R")

LISTEN_SECONDS = 0.2  # how long the loop waits for a message before looking at its timers again
RESUBSCRIBE_MAX = 1.0  # reconnect at least once a second, so a change after an outage arrives quickly

_clients: weakref.WeakSet[_ClientBase] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_clients):
        client._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _ClientBase(Evaluator):
    def __init__(
        self, defaults: Iterable[Feature | Flag], options: FlagsOptions | None, clock: Clock, overrides: Any
    ) -> None:
        self.options = FlagsOptions.build(options, overrides)
        self._dist = Distributor(self.options, defaults, clock, self._install)
        super().__init__(self._dist.initial_snapshot(), static_context=self.options.static_context)
        self._owned = False
        self._closed = False
        self._kick = self._start_background
        _clients.add(self)

    def _install(self, snapshot: Snapshot) -> None:
        self._swap(snapshot)

    @property
    def status(self) -> FlagsStatus:
        """What is served (``source``: defaults, redis, database, redis-stale), ``ready``, and why not."""
        return self._dist.status

    @property
    def ready(self) -> bool:
        return self._dist.status.ready

    @property
    def stats(self) -> FlagsStats:
        return self._dist.stats

    def _start_background(self) -> None:
        raise NotImplementedError

    def _forked(self) -> None:
        raise NotImplementedError


class FlagsClient(_ClientBase):
    """Feature flags for sync code (WSGI, threads, Celery): the whole set held in memory, evaluated without
    I/O, kept current by a background thread (Redis pub/sub, a polled version key, PostgreSQL).

    ``defaults`` are served until the first load, and under the stored set for any key it does not define.
    """

    def __init__(
        self,
        redis: SyncRedis,
        engine: Engine,
        *,
        defaults: Iterable[Feature | Flag] = (),
        options: FlagsOptions | None = None,
        clock: Clock = SYSTEM_CLOCK,
        **overrides: Any,
    ) -> None:
        super().__init__(defaults, options, clock, overrides)
        self.redis = redis
        self.repository = FlagRepository(engine, self.options.set_name)
        scripts: Any = redis  # Redis or RedisCluster: both register scripts
        self._fill = scripts.register_script(FILL_SCRIPT)
        self._reset_threading()

    def _reset_threading(self) -> None:
        self._lock = threading.Lock()  # one flow at a time (background or a write), never on evaluation
        self._start_lock = threading.Lock()
        self._loaded = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_urls(
        cls,
        redis_url: str,
        database_url: str,
        *,
        redis_options: dict[str, Any] | None = None,
        engine_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Self:
        """A client owning its Redis client and engine (``close()`` closes them)."""
        redis = redis_from_url(redis_url, **{**fail_fast_redis_options(redis_url), **(redis_options or {})})
        client = cls(redis, create_engine(database_url, **(engine_options or {})), **kwargs)
        client._owned = True
        return client

    # -- lifecycle

    def start(self, timeout: float | None = None) -> FlagsStatus:
        """Start the background loader and wait up to ``timeout`` (default ``startup_timeout``) for the
        first load; then serve whatever is there (last good cached snapshot or defaults), with the reason."""
        self._start_background()
        wait = self.options.startup_timeout if timeout is None else timeout
        if not self._loaded.wait(wait):
            self._dist.startup_expired(wait)
        return self.status

    def _start_background(self) -> None:
        with self._start_lock:
            self._kick = None
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="llmproxy-flags", daemon=True)
            self._thread.start()

    def _forked(self) -> None:
        self._reset_threading()
        self.repository.engine.dispose(close=False)  # the parent's connections are the parent's
        if not self._closed:
            self._kick = self._start_background

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        if self._owned:
            self.redis.close()
            self.repository.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def refresh(self) -> bool:
        """Check for a newer flag set now (True: a new snapshot is served)."""
        with self._lock:
            self._dist.refresh_due = True
            return self._run_flow(self._dist.refresh_flow())

    # -- writes (errors propagate: pydantic ValidationError, InvalidFlagSet, VersionConflict, FlagNotFound)

    def put(
        self, flag: Feature | Flag, *, updated_by: str | None = None, expected_version: int | None = None
    ) -> StoredFlag:
        """Create or replace a flag; served here at once, everywhere else within about a second."""
        with self._lock:
            return self._run_flow(self._dist.put_flow(flag, updated_by, expected_version))

    def delete(self, key: str, *, updated_by: str | None = None, expected_version: int | None = None) -> None:
        with self._lock:
            self._run_flow(self._dist.delete_flow(key, updated_by, expected_version))

    def put_segment(self, segment: Segment, *, updated_by: str | None = None) -> None:
        with self._lock:
            self._run_flow(self._dist.put_segment_flow(segment, updated_by))

    def delete_segment(self, segment_id: int, *, updated_by: str | None = None) -> None:
        with self._lock:
            self._run_flow(self._dist.delete_segment_flow(segment_id, updated_by))

    # -- I/O

    def _run_flow(self, flow: Flow[Operation, R]) -> R:
        # The cast: core's run_flow(flow | value) leaves mypy unable to infer R from a generator (it infers
        # Never); the flow's own type is kept by this signature.
        result: R = run_flow(cast(Any, flow), self._perform)
        return result

    def _perform(self, op: Operation) -> Any:
        match op:
            case RedisRead(version_key, snapshot_key):
                pipe = self.redis.pipeline(transaction=False)
                pipe.get(version_key)
                pipe.hmget(snapshot_key, ["epoch", "version", "body"])
                return read_reply(pipe.execute())
            case RedisVersion(version_key):
                return self.redis.get(version_key)
            case RedisFill(snapshot_key, version_key, epoch, version, body, ttl):
                return self._fill(keys=[snapshot_key, version_key], args=[epoch, version, body, ttl])
            case RedisPublish(channel, message):
                return self.redis.publish(channel, message)
            case DbLoad():
                return self.repository.load()
            case DbToken():
                return self.repository.token()
            case DbPut(flag, updated_by, expected):
                return self.repository.put(flag, updated_by=updated_by, expected_version=expected)
            case DbDelete(key, updated_by, expected):
                return self.repository.delete(key, updated_by=updated_by, expected_version=expected)
            case DbPutSegment(segment, updated_by):
                return self.repository.put_segment(segment, updated_by=updated_by)
            case DbDeleteSegment(segment_id, updated_by):
                return self.repository.delete_segment(segment_id, updated_by=updated_by)
        raise AssertionError(f"unknown operation {op!r}")

    def _step(self) -> None:
        dist = self._dist
        with self._lock:
            if dist.wants_refresh():
                self._run_flow(dist.refresh_flow())
            elif dist.wants_republish():
                self._run_flow(dist.republish_flow())
            elif dist.wants_poll():
                self._run_flow(dist.poll_flow())
        if dist.status.ready:
            self._loaded.set()

    def _run(self) -> None:
        dist, stop = self._dist, self._stop
        pubsub: Any = None
        resubscribe_at, delay = 0.0, self.options.retry_min
        while not stop.is_set():
            try:
                if self.options.subscribe and pubsub is None and time.monotonic() >= resubscribe_at:
                    try:
                        pubsub = self.redis.pubsub()  # type: ignore[no-untyped-call,unused-ignore]
                        pubsub.subscribe(dist.channel)
                    except Exception as exc:
                        dist._failed("redis", exc, "subscribing to flag changes")
                        _close(pubsub)
                        pubsub = None
                        resubscribe_at, delay = time.monotonic() + delay, min(delay * 2, RESUBSCRIBE_MAX)
                self._step()
                if pubsub is None:
                    stop.wait(LISTEN_SECONDS)
                    continue
                try:
                    message = pubsub.get_message(timeout=LISTEN_SECONDS)
                except Exception as exc:
                    dist._failed("redis", exc, "listening for flag changes")
                    _close(pubsub)
                    pubsub = None
                    resubscribe_at, delay = time.monotonic() + delay, min(delay * 2, RESUBSCRIBE_MAX)
                    continue
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    dist.on_subscribed()
                    dist.redis_recovered()
                    delay = self.options.retry_min
                elif message["type"] == "message":
                    dist.on_message(message["data"])
            except Exception:  # a bug must not end the loop that keeps every flag current
                logger.exception("flags: background loop error")
                stop.wait(1.0)
        _close(pubsub)


def _close(pubsub: Any) -> None:
    if pubsub is not None:
        with contextlib.suppress(Exception):
            pubsub.close()


class AsyncFlagsClient(_ClientBase):
    """The asyncio twin of :class:`FlagsClient`: the background work is a task on the running loop.
    ``is_enabled``/``variant`` are synchronous (pure, no I/O); ``start``, the writes and ``aclose`` are
    coroutines."""

    def __init__(
        self,
        redis: AsyncRedis,
        engine: AsyncEngine,
        *,
        defaults: Iterable[Feature | Flag] = (),
        options: FlagsOptions | None = None,
        clock: Clock = SYSTEM_CLOCK,
        **overrides: Any,
    ) -> None:
        super().__init__(defaults, options, clock, overrides)
        self.redis = redis
        self.repository = AsyncFlagRepository(engine, self.options.set_name)
        scripts: Any = redis
        self._fill = scripts.register_script(FILL_SCRIPT)
        self._reset_asyncio()

    def _reset_asyncio(self) -> None:
        self._lock = asyncio.Lock()
        self._loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_urls(
        cls,
        redis_url: str,
        database_url: str,
        *,
        redis_options: dict[str, Any] | None = None,
        engine_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Self:
        """A client owning its Redis client and engine (``aclose()`` closes them)."""
        options = {**fail_fast_redis_options(redis_url), **(redis_options or {})}
        redis = async_redis_from_url(redis_url, **options)
        client = cls(redis, create_async_engine(database_url, **(engine_options or {})), **kwargs)
        client._owned = True
        return client

    async def start(self, timeout: float | None = None) -> FlagsStatus:  # noqa: ASYNC109 (the twin's API)
        """See :meth:`FlagsClient.start`."""
        self._start_background()
        wait = self.options.startup_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(wait):
                await self._loaded.wait()
        except TimeoutError:
            self._dist.startup_expired(wait)
        return self.status

    def _start_background(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not on a loop (yet): the next call from one starts it
        self._kick = None
        if self._task is None and not self._closed:
            self._task = loop.create_task(self._run(), name="llmproxy-flags")

    def _forked(self) -> None:
        self._reset_asyncio()
        pool = getattr(self.redis, "connection_pool", None)
        if pool is not None and hasattr(pool, "reset"):
            pool.reset()  # the parent's connections belong to the parent's loop
        self.repository.engine.sync_engine.dispose(close=False)
        if not self._closed:
            self._kick = self._start_background

    async def aclose(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not await cancel_and_wait(task):
            logger.warning("flags: the background task did not stop within 5 s")
        if self._owned:
            await self.redis.aclose()
            await self.repository.engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def refresh(self) -> bool:
        async with self._lock:
            self._dist.refresh_due = True
            return await self._run_flow(self._dist.refresh_flow())

    async def put(
        self, flag: Feature | Flag, *, updated_by: str | None = None, expected_version: int | None = None
    ) -> StoredFlag:
        """See :meth:`FlagsClient.put`."""
        async with self._lock:
            return await self._run_flow(self._dist.put_flow(flag, updated_by, expected_version))

    async def delete(
        self, key: str, *, updated_by: str | None = None, expected_version: int | None = None
    ) -> None:
        async with self._lock:
            await self._run_flow(self._dist.delete_flow(key, updated_by, expected_version))

    async def put_segment(self, segment: Segment, *, updated_by: str | None = None) -> None:
        async with self._lock:
            await self._run_flow(self._dist.put_segment_flow(segment, updated_by))

    async def delete_segment(self, segment_id: int, *, updated_by: str | None = None) -> None:
        async with self._lock:
            await self._run_flow(self._dist.delete_segment_flow(segment_id, updated_by))

    async def _run_flow(self, flow: Flow[Operation, R]) -> R:
        result: R = await arun_flow(cast(Any, flow), self._perform)
        return result

    async def _perform(self, op: Operation) -> Any:
        redis: Any = self.redis  # RedisCluster publishes too (not in redis-py's async stubs)
        match op:
            case RedisRead(version_key, snapshot_key):
                pipe = redis.pipeline(transaction=False)
                pipe.get(version_key)
                pipe.hmget(snapshot_key, ["epoch", "version", "body"])
                return read_reply(await pipe.execute())
            case RedisVersion(version_key):
                return await redis.get(version_key)
            case RedisFill(snapshot_key, version_key, epoch, version, body, ttl):
                return await self._fill(keys=[snapshot_key, version_key], args=[epoch, version, body, ttl])
            case RedisPublish(channel, message):
                return await redis.publish(channel, message)
            case DbLoad():
                return await self.repository.load()
            case DbToken():
                return await self.repository.token()
            case DbPut(flag, updated_by, expected):
                return await self.repository.put(flag, updated_by=updated_by, expected_version=expected)
            case DbDelete(key, updated_by, expected):
                return await self.repository.delete(key, updated_by=updated_by, expected_version=expected)
            case DbPutSegment(segment, updated_by):
                return await self.repository.put_segment(segment, updated_by=updated_by)
            case DbDeleteSegment(segment_id, updated_by):
                return await self.repository.delete_segment(segment_id, updated_by=updated_by)
        raise AssertionError(f"unknown operation {op!r}")

    async def _step(self) -> None:
        dist = self._dist
        async with self._lock:
            if dist.wants_refresh():
                await self._run_flow(dist.refresh_flow())
            elif dist.wants_republish():
                await self._run_flow(dist.republish_flow())
            elif dist.wants_poll():
                await self._run_flow(dist.poll_flow())
        if dist.status.ready:
            self._loaded.set()

    async def _run(self) -> None:
        dist = self._dist
        pubsub: Any = None
        resubscribe_at, delay = 0.0, self.options.retry_min
        try:
            while True:
                raise_if_cancelling()  # a cancel that redis-py swallowed must still stop this loop
                try:
                    if self.options.subscribe and pubsub is None and time.monotonic() >= resubscribe_at:
                        try:
                            pubsub = self.redis.pubsub()
                            await pubsub.subscribe(dist.channel)
                        except Exception as exc:
                            dist._failed("redis", exc, "subscribing to flag changes")
                            await _aclose(pubsub)
                            pubsub = None
                            resubscribe_at, delay = time.monotonic() + delay, min(delay * 2, RESUBSCRIBE_MAX)
                    await self._step()
                    if pubsub is None:
                        await asyncio.sleep(LISTEN_SECONDS)
                        continue
                    try:
                        message = await pubsub.get_message(timeout=LISTEN_SECONDS)
                    except Exception as exc:
                        dist._failed("redis", exc, "listening for flag changes")
                        await _aclose(pubsub)
                        pubsub = None
                        resubscribe_at, delay = time.monotonic() + delay, min(delay * 2, RESUBSCRIBE_MAX)
                        continue
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        dist.on_subscribed()
                        dist.redis_recovered()
                        delay = self.options.retry_min
                    elif message["type"] == "message":
                        dist.on_message(message["data"])
                except Exception:
                    logger.exception("flags: background loop error")
                    await asyncio.sleep(1.0)
        finally:
            await _aclose(pubsub)


async def _aclose(pubsub: Any) -> None:
    if pubsub is not None:
        with contextlib.suppress(Exception):
            await pubsub.aclose()
