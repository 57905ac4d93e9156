"""Coalescing of an asyncio client's script calls: what concurrent requests send while Redis is busy answering
leaves together, as one pipeline (one write, one read, one round trip).

A call made while fewer than ``max_in_flight`` (2) round trips are out goes at once, in the caller's task: a
lone request (and its previous request's settle) waits no longer than without this. Beyond that, calls queue,
and one flusher task sends the queue as one pipeline, and again, as long as calls keep queueing. Each queued
call then costs Redis and the client a fraction of a separate round trip (redis-py's asyncio client spends far
more per call on connection checks, timeouts and packing than per command of a pipeline).

A *detached* call (a settle) always goes through the queue, so that its caller's cancellation (a client that
disconnects) cannot stop it half-sent: once queued it is sent, and only its answer is dropped if nobody waits.
It waits up to ``detached_delay`` (5 ms) for company: the next call of this client (at one request at a time,
the next request's admit) takes it along in its pipeline, which saves a round trip per request. Any later call
of the same client is sent after it, so this process reads its own settles.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import NoScriptError

from ._direct import AsyncDirectLine, Command

_Entry = tuple[Command, "asyncio.Future[Any]", bool]  # a queued call: command, its answer, detached


class Pipeliner:
    def __init__(
        self,
        redis: Any,
        script: str,
        *,
        batching: bool = True,
        max_in_flight: int = 2,
        detached_delay: float = 0.005,
    ) -> None:
        self.redis = redis
        self.line = AsyncDirectLine(redis)  # single calls go on a held connection (see _direct.py)
        self.script = script
        self.batching = batching  # off for Redis Cluster (a pipeline there spans nodes: calls go one by one)
        self.max_in_flight = max_in_flight  # round trips at once before calls queue up for a pipeline
        self.detached_delay = detached_delay  # how long a detached call waits for company, at most
        self._queue: list[_Entry] = []
        self._in_flight = 0
        self._flusher: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._alone: set[asyncio.Task[Any]] = set()  # detached calls sent one by one (no batching)

    async def call(self, command: Command, *, detached: bool = False) -> Any:
        """Run one script call; its reply (or exception)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new event loop: nothing of an old one is in flight here
            self._loop, self._queue, self._in_flight, self._flusher, self._timer = loop, [], 0, None, None
            self._alone = set()
        if not self.batching:
            if not detached:
                return await self._one(command)
            # its own task, so that the caller's cancellation cannot stop it half-sent
            task = loop.create_task(self._one(command))
            self._alone.add(task)
            task.add_done_callback(self._alone.discard)
            return await asyncio.shield(task)
        future: asyncio.Future[Any] = loop.create_future()
        if detached:
            # a settle: waits up to detached_delay for the next call to share its round trip (at one request
            # at a time, the next request's admit), then goes alone
            self._queue.append((command, future, True))
            if self._flusher is None and self._timer is None:
                self._timer = loop.call_later(self.detached_delay, self._start_flusher)
            return await future
        if self._in_flight >= self.max_in_flight or self._queue:
            # Redis is busy, or calls wait already (they are sent first): leave with them, in one pipeline
            self._queue.append((command, future, False))
            self._start_flusher()
            return await future
        self._in_flight += 1
        try:
            return await self._one(command)
        finally:
            self._in_flight -= 1

    def _start_flusher(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flusher is None and self._queue and self._loop is not None:
            flusher = self._flusher = self._loop.create_task(self._flush())
            flusher.add_done_callback(self._flusher_done)

    def _flusher_done(self, flusher: asyncio.Task[None]) -> None:
        if self._flusher is flusher:  # it ended without its own cleanup (cancelled before it started)
            self._flusher = None
        if (
            flusher.cancelled()
        ):  # the loop is shutting down: nobody will send what waits; do not hang its callers
            queued, self._queue = self._queue, []
            _fail(queued, None)

    async def drain(self) -> None:
        """Send every queued call now and wait for the answers (closing a client)."""
        if self._loop is not asyncio.get_running_loop():
            return
        self._start_flusher()
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            await asyncio.shield(flusher)
        if self._alone:
            await asyncio.gather(*self._alone, return_exceptions=True)

    async def _one(self, command: Command) -> Any:
        line = self.line
        try:
            return await line.call(command)
        except NoScriptError:
            await self.redis.script_load(self.script)  # a restarted or new server
            return await line.call(command)

    async def aclose(self) -> None:
        """Send what is queued, then give the held connection back to the pool."""
        await self.drain()
        await self.line.aclose()

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                # a call whose caller gave up before it was sent is dropped (an admit nobody waits for would
                # charge the tenant); a detached one is sent all the same
                batch = [entry for entry in batch if entry[2] or not entry[1].cancelled()]
                if not batch:
                    continue
                self._in_flight += 1
                try:
                    await self._send(batch)
                finally:
                    self._in_flight -= 1
        finally:
            self._flusher = None

    async def _send(self, batch: list[_Entry]) -> None:
        if len(batch) == 1:
            command, future, _ = batch[0]
            try:
                _settle(future, await self._one(command))
            except asyncio.CancelledError:
                _fail(batch, None)
                raise
            except Exception as exc:
                _fail(batch, exc)
            return
        try:
            results = await self._pipeline([command for command, _, _ in batch])
            missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
            if missing:
                await self.redis.script_load(self.script)
                retried = await self._pipeline([batch[i][0] for i in missing])
                for i, result in zip(missing, retried, strict=True):
                    results[i] = result
        except asyncio.CancelledError:
            _fail(batch, None)
            raise
        except Exception as exc:  # the connection failed: every call of the batch sees it
            _fail(batch, exc)
            return
        for (_, future, _), result in zip(batch, results, strict=True):
            _settle(future, result)

    async def _pipeline(self, commands: list[Command]) -> list[Any]:
        return await self.line.call_many(commands)


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if future.done():  # its caller gave up waiting (cancelled): the call was made, the answer is dropped
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def _fail(batch: list[_Entry], exc: BaseException | None) -> None:
    for _, future, _ in batch:
        if not future.done():
            if exc is None:
                future.cancel()
            else:
                future.set_exception(exc)


def is_cluster(redis: Any) -> bool:
    from redis.asyncio.cluster import RedisCluster

    return isinstance(redis, RedisCluster)
