"""The write-behind: Redis writes that leave together, in one pipeline, with the next call or within a few ms.

Every concern writes to Redis when a request ends (quota's settle, metering's record, audit's event). A round
trip each would cost the gateway a large share of its throughput; instead they are queued in the process and
leave together: in the pipeline of the next call of the same client (at one request at a time, the next
request's admit), or after ``delay`` (5 ms) at most, whichever comes first. Concurrent requests' writes are
coalesced the same way. One write-behind is shared per Redis client (:meth:`AsyncWriteBehind.for_client`),
so the writes of every package using that client share its round trips.

Three ways in:

- ``enqueue(command)``: fire and forget. Never raises: the queue is bounded (``max_queue``), a write refused
  or failed is counted in ``stats`` (and logged at most every few seconds). asyncio: never blocks, and a full
  queue refuses the write. Sync: a full queue makes the enqueuing thread send a batch itself first
  (back-pressure: a thread producing faster than Redis takes it is slowed, not dropped).
- ``await submit(command)``: queued the same way, and sent even if the caller is cancelled (a client that went
  away mid-stream); returns the reply (or raises its error).
- ``await call(command)``: sent now, taking whatever is queued along in the same pipeline (the queued writes
  go first, so a process reads its own writes); returns the reply.

A script the server does not know (``NOSCRIPT``: a restarted server, a failover) is loaded and its writes sent
again: those are then applied after the writes that followed them in the same pipeline.

Redis Cluster: a pipeline there is split by redis-py per node (every command's keys share a hash slot: the
tenant hash tags); calls without company go one by one. A forked child starts with an empty queue (the
parent's writes are the parent's to send) and a connection of its own; a new event loop likewise.
``aclose()`` / ``close()`` send what is queued before giving the connection back.

The sync twin, :class:`WriteBehind`, sends queued writes from a flusher thread after ``delay``, or with the
next ``call`` / ``submit`` of any thread (which, being synchronous, are sent at once).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self

from redis.exceptions import NoScriptError, RedisError, ResponseError

from ._line import AsyncDirectLine, Command, DirectLine, PackedCommand, resp_bulk, resp_head

logger = logging.getLogger("llmproxy.core.write_behind")

DEFAULT_DELAY = 0.005
DEFAULT_MAX_QUEUE = 10_000
DEFAULT_MAX_BATCH = 1_000
_LOG_EVERY = 5.0  # seconds between two log lines about dropped or failed writes


class Script:
    """A Lua script called by its SHA-1 (``EVALSHA``), loaded again where the server does not know it."""

    __slots__ = ("_heads", "sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha: bytes = hashlib.sha1(source.encode()).hexdigest().encode()
        self._heads: dict[tuple[int, int], bytes] = {}

    def head(self, keys: int, args: int) -> bytes:
        """The RESP of a call with ``keys`` keys and ``args`` arguments up to its first key: the argument
        count, ``EVALSHA``, the SHA and the key count (kept: a caller makes calls of a few shapes). Append
        :func:`resp_bulk` of each key and argument for the call's :class:`PackedCommand`."""
        head = self._heads.get((keys, args))
        if head is None:
            head = resp_head(["EVALSHA", self.sha, keys], 3 + keys + args)
            if len(self._heads) < 64:
                self._heads[(keys, args)] = head
        return head

    def command(self, keys: Sequence[Any], args: Sequence[Any]) -> list[Any]:
        """``EVALSHA`` of this script with ``keys`` and ``args``, its RESP encoded here (a
        :class:`PackedCommand`: cheaper than redis-py's packing of the same arguments)."""
        rest = [*keys, *args]
        packed = self.head(len(keys), len(args)) + b"".join([resp_bulk(a) for a in rest])
        return PackedCommand(["EVALSHA", self.sha, len(keys), *rest], packed)


class WriteBehindFull(RedisError):
    """The write-behind's queue is full (Redis is slow or unreachable): the write was not queued."""


@dataclass
class WriteBehindStats:
    """Counters of one write-behind (export them as metrics)."""

    enqueued: int = 0  # fire-and-forget writes accepted
    submitted: int = 0  # awaited writes accepted (submit, and calls that joined the queue)
    sent: int = 0  # writes that reached Redis in a pipeline of queued writes
    pipelines: int = 0  # round trips that carried queued writes
    dropped: int = 0  # writes refused: queue full, or closed
    failed: int = 0  # fire-and-forget writes whose round trip failed or whose reply was an error

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _Counter:
    """Stats plus the rate-limited log of losses, shared by both shells."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stats = WriteBehindStats()
        self._logged_at = float("-inf")
        self._unlogged = 0

    def lost(self, kind: str, n: int, error: BaseException | None = None) -> None:
        setattr(self.stats, kind, getattr(self.stats, kind) + n)
        self._unlogged += n
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY:
            logger.warning(
                "write-behind %s: %d write(s) %s%s (since the last report: %d lost)",
                self.name,
                n,
                kind,
                f" ({type(error).__name__}: {error})" if error is not None else "",
                self._unlogged,
            )
            self._logged_at, self._unlogged = now, 0


def _scripts_to_load(entries: Sequence[tuple[Command, Script | None]], results: Sequence[Any]) -> list[int]:
    return [
        i
        for i, result in enumerate(results)
        if isinstance(result, NoScriptError) and entries[i][1] is not None
    ]


_SHARED_LOCK = threading.Lock()


class _Shared:
    """What both write-behinds have: their settings, counters and queue, and one instance per Redis client."""

    _shared: ClassVar[weakref.WeakKeyDictionary[Any, Any]]
    _queue: list[Any]
    _closed: bool

    def __init_subclass__(cls) -> None:
        cls._shared = weakref.WeakKeyDictionary()  # one instance per client and per kind (sync, asyncio)

    def __init__(
        self,
        redis: Any,
        *,
        delay: float = DEFAULT_DELAY,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_batch: int = DEFAULT_MAX_BATCH,
        name: str = "redis",
    ) -> None:
        if not 0 <= delay <= 1:
            raise ValueError(f"delay must be 0..1 seconds, got {delay!r}")
        if max_queue < 1 or max_batch < 1:
            raise ValueError("max_queue and max_batch must be positive")
        self.redis = redis
        self.delay = delay
        self.max_queue = max_queue
        self.max_batch = max_batch
        self._counter = _Counter(name)
        self._start()

    def _start(self) -> None:
        """The shell's own state (its line, queue, flusher)."""

    @classmethod
    def for_client(cls, redis: Any) -> Self:
        """The write-behind shared by every user of ``redis`` in this process (created on first use, and
        again after it was closed)."""
        with _SHARED_LOCK:
            shared: Self | None = cls._shared.get(redis)
            if shared is None or shared._closed:
                shared = cls._shared[redis] = cls(redis)
        return shared

    @property
    def stats(self) -> WriteBehindStats:
        return self._counter.stats

    @property
    def pending(self) -> int:
        """Writes queued and not yet sent."""
        return len(self._queue)


# -- asyncio -----------------------------------------------------------------------------------------------

_Entry = tuple[
    Command, "Script | None", "asyncio.Future[Any] | None", bool
]  # command, script, answer, detached


class AsyncWriteBehind(_Shared):
    """The write-behind of an asyncio Redis client (see the module docstring).

    A call made while fewer than ``max_in_flight`` round trips are out goes at once, in the caller's task: a
    lone request waits no longer than without this. Beyond that, calls queue, and one flusher task sends the
    queue as one pipeline, and again, as long as calls keep queueing.
    """

    def __init__(
        self,
        redis: Any,
        *,
        delay: float = DEFAULT_DELAY,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_in_flight: int = 2,
        name: str = "redis",
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be positive")
        self.max_in_flight = max_in_flight
        super().__init__(redis, delay=delay, max_queue=max_queue, max_batch=max_batch, name=name)

    def _start(self) -> None:
        self.line = AsyncDirectLine(self.redis)
        self._queue: list[_Entry] = []
        self._in_flight = 0
        self._flusher: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # -- the three ways in

    def enqueue(self, command: Command, *, script: Script | None = None) -> bool:
        """Queue a write whose reply nobody waits for. False (counted) when it cannot be queued."""
        loop = self._current_loop()
        if loop is None or self._closed or len(self._queue) >= self.max_queue:
            self._counter.lost("dropped", 1)
            return False
        self._queue.append((command, script, None, True))
        self._counter.stats.enqueued += 1
        self._arm(loop)
        return True

    async def submit(self, command: Command, *, script: Script | None = None) -> Any:
        """Queue a write and wait for its reply; it is sent even if this caller is cancelled."""
        loop = asyncio.get_running_loop()
        self._adopt(loop)
        if self._closed or len(self._queue) >= self.max_queue:
            self._counter.lost("dropped", 1)
            raise WriteBehindFull("the write-behind queue is full" if not self._closed else "closed")
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((command, script, future, True))
        self._counter.stats.submitted += 1
        self._arm(loop)
        return await future

    async def call(self, command: Command, *, script: Script | None = None) -> Any:
        """Send ``command`` now (with what is queued, in one pipeline) and return its reply."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # (checked here: a call of _adopt costs every admit ~700 instructions)
            self._adopt(loop)
        if (self._in_flight >= self.max_in_flight or self._queue) and len(self._queue) < self.max_queue:
            # Redis is busy, or writes wait already (they are sent first): leave with them, in one pipeline
            future: asyncio.Future[Any] = loop.create_future()
            self._queue.append((command, script, future, False))
            self._counter.stats.submitted += 1
            self._start_flusher()
            return await future
        self._in_flight += 1
        try:  # (_one's work inline: a coroutine less on every admit)
            return await self.line.call(command)
        except NoScriptError as exc:
            return await self._reloaded(command, script, exc)
        finally:
            self._in_flight -= 1

    async def flush(self) -> None:
        """Send everything queued now and wait until it is sent."""
        if self._loop is not asyncio.get_running_loop():
            return
        self._start_flusher()
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            await asyncio.shield(flusher)

    async def aclose(self) -> None:
        """Send what is queued, then give the held connection back to the pool; later writes are dropped."""
        await self.flush()
        self._closed = True
        await self.line.aclose()

    # -- machinery

    def _current_loop(self) -> asyncio.AbstractEventLoop | None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # enqueue outside a running loop: nothing could ever send it
            return None
        self._adopt(loop)
        return loop

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:  # first use, or a new event loop: nothing of an old one is in flight here
            self._loop, self._queue, self._in_flight, self._flusher, self._timer = loop, [], 0, None, None

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._flusher is None and self._timer is None:
            if self.delay == 0:
                self._start_flusher()
            else:
                self._timer = loop.call_later(self.delay, self._start_flusher)

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
        if flusher.cancelled():  # the loop is shutting down: nobody will send what waits; do not hang callers
            queued, self._queue = self._queue, []
            self._fail(queued, None)

    async def _one(self, command: Command, script: Script | None) -> Any:
        try:
            return await self.line.call(command)
        except NoScriptError as exc:
            return await self._reloaded(command, script, exc)

    async def _reloaded(self, command: Command, script: Script | None, exc: NoScriptError) -> Any:
        """``command`` again, once the server (restarted, new) has its script; without one, its NOSCRIPT."""
        if script is None:
            raise exc
        await self.redis.script_load(script.source)
        return await self.line.call(command)

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                # a call whose caller gave up before it was sent is dropped (an admit nobody waits for would
                # charge the tenant); a detached write is sent all the same
                batch = [e for e in batch if e[3] or not e[2].cancelled()]  # type: ignore[union-attr]
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
        try:
            if len(batch) == 1:
                command, script, _, _ = batch[0]
                try:
                    results: list[Any] = [await self._one(command, script)]
                except ResponseError as exc:  # an error reply: the entry's, not the round trip's
                    results = [exc]
            else:
                results = await self.line.call_many([e[0] for e in batch])
                missing = _scripts_to_load([(e[0], e[1]) for e in batch], results)
                if missing:
                    for source in {batch[i][1].source for i in missing}:  # type: ignore[union-attr]
                        await self.redis.script_load(source)
                    retried = await self.line.call_many([batch[i][0] for i in missing])
                    for i, result in zip(missing, retried, strict=True):
                        results[i] = result
        except asyncio.CancelledError:
            self._fail(batch, None)
            raise
        except Exception as exc:  # the round trip failed: every write of the batch sees it
            self._fail(batch, exc)
            return
        stats = self._counter.stats
        stats.pipelines += 1
        stats.sent += len(batch)
        failed: BaseException | None = None
        n_failed = 0
        for (_, _, future, _), result in zip(batch, results, strict=True):
            if future is None:
                if isinstance(result, BaseException):
                    failed, n_failed = result, n_failed + 1
            elif not future.done():  # done: its caller gave up waiting; the write was made, the reply dropped
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        if n_failed:
            self._counter.lost("failed", n_failed, failed)

    def _fail(self, batch: list[_Entry], exc: BaseException | None) -> None:
        n_failed = 0
        for _, _, future, _ in batch:
            if future is None:
                n_failed += 1
            elif not future.done():
                if exc is None:
                    future.cancel()
                else:
                    future.set_exception(exc)
        if n_failed:
            self._counter.lost("failed", n_failed, exc)


# -- sync --------------------------------------------------------------------------------------------------

_SyncEntry = tuple[Command, "Script | None"]
_SYNC_INSTANCES: weakref.WeakSet[WriteBehind] = weakref.WeakSet()


class WriteBehind(_Shared):
    """The write-behind of a sync Redis client: a flusher thread sends queued writes after ``delay``, or the
    next :meth:`call` / :meth:`submit` of any thread takes them along (see the module docstring)."""

    def _start(self) -> None:
        self.line = DirectLine(self.redis)
        self._reset()
        _SYNC_INSTANCES.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)  # notified when taken writes have been sent or failed
        self._taken = 0  # queued writes taken from the queue and not yet sent (or failed)
        self._wake = threading.Event()
        self._queue: list[_SyncEntry] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    def enqueue(self, command: Command, *, script: Script | None = None) -> bool:
        """Queue a write whose reply nobody waits for. False (counted) when it cannot be queued: closed, or
        the queue is full and sending a batch of it in this thread failed.

        A full queue is not a reason to drop here: the caller's thread sends its oldest batch itself (one
        pipeline, bounded by the connection's timeouts) and queues the write after it. A thread producing
        faster than one round trip per ``max_batch`` writes (a batch job recording usage) is slowed to
        Redis' pace instead of losing what it records."""
        while True:
            with self._lock:
                if self._closed:
                    break
                if len(self._queue) < self.max_queue:
                    self._queue.append((command, script))
                    self._counter.stats.enqueued += 1
                    if self._thread is None:
                        self._thread = threading.Thread(
                            target=self._run, name=f"llmproxy-write-behind-{self._counter.name}", daemon=True
                        )
                        self._thread.start()
                    self._wake.set()
                    return True
            if not self._send_batch():  # full: back-pressure (a failed send is counted as failed)
                break
        self._counter.lost("dropped", 1)
        return False

    def call(self, command: Command, *, script: Script | None = None) -> Any:
        """Send ``command`` now, with what is queued in one pipeline (queued writes first); its reply."""
        if not self._queue:  # (read without the lock: a write queued meanwhile goes with the flusher)
            try:  # (_one's work inline: a call less on every admit)
                return self.line.call(command)
            except NoScriptError as exc:
                return self._reloaded(command, script, exc)
        batch = self._take(self.max_batch - 1)
        if not batch:
            return self._one(command, script)
        self._counter.stats.submitted += 1
        try:
            results = self._send([*batch, (command, script)], own=True)
        finally:
            self._settle(len(batch))
        result = results[-1]
        if isinstance(result, BaseException):
            raise result
        return result

    #: A sync caller waits anyway: its write is sent at once, taking queued writes along.
    submit = call

    def flush(self, timeout: float = 5.0) -> None:
        """Send everything queued now, and wait (up to ``timeout`` seconds) until the writes other threads
        took from the queue (the flusher thread's batch in flight, a ``call`` taking writes along) are sent
        too."""
        self._drain()
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._taken:
                left = deadline - time.monotonic()
                if left <= 0 or not self._settled.wait(left):
                    return

    def _drain(self) -> None:
        while self._queue and self._send_batch():
            pass

    def _send_batch(self) -> bool:
        """Send the oldest ``max_batch`` queued writes (none: another thread took them); False when the send
        failed."""
        batch = self._take(self.max_batch)
        if not batch:
            return True
        try:
            self._send(batch, own=False)
        except Exception:  # counted as failed by _send
            return False
        finally:
            self._settle(len(batch))
        return True

    def _take(self, n: int) -> list[_SyncEntry]:
        """The oldest ``n`` queued writes, counted as taken until :meth:`_settle`."""
        with self._lock:
            batch = self._queue[:n]
            del self._queue[:n]
            self._taken += len(batch)
        return batch

    def _settle(self, n: int) -> None:
        with self._lock:
            self._taken -= n
            if not self._taken:
                self._settled.notify_all()

    def close(self) -> None:
        """Send what is queued, stop the flusher thread, give the held connection back."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        self.flush()
        self.line.close()

    def _one(self, command: Command, script: Script | None) -> Any:
        try:
            return self.line.call(command)
        except NoScriptError as exc:
            return self._reloaded(command, script, exc)

    def _reloaded(self, command: Command, script: Script | None, exc: NoScriptError) -> Any:
        """``command`` again, once the server (restarted, new) has its script; without one, its NOSCRIPT."""
        if script is None:
            raise exc
        self.redis.script_load(script.source)
        return self.line.call(command)

    def _send(self, batch: list[_SyncEntry], *, own: bool) -> list[Any]:
        """Send ``batch``; with ``own``, its last entry is the caller's (its failure raises, not counted)."""
        try:
            results = self.line.call_many([e[0] for e in batch])
            missing = _scripts_to_load(batch, results)
            if missing:
                for source in {batch[i][1].source for i in missing}:  # type: ignore[union-attr]
                    self.redis.script_load(source)
                retried = self.line.call_many([batch[i][0] for i in missing])
                for i, result in zip(missing, retried, strict=True):
                    results[i] = result
        except Exception as exc:
            queued = len(batch) - (1 if own else 0)
            if queued:
                self._counter.lost("failed", queued, exc)
            raise
        stats = self._counter.stats
        stats.pipelines += 1
        stats.sent += len(batch)
        queued_results = results[:-1] if own else results
        errors = [r for r in queued_results if isinstance(r, BaseException)]
        if errors:
            self._counter.lost("failed", len(errors), errors[-1])
        return results

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self.delay and not self._closed:
                time.sleep(self.delay)  # let more writes join this round trip
            self._wake.clear()
            self._drain()
            if self._closed:
                return


def _after_fork() -> None:
    for wb in list(_SYNC_INSTANCES):
        wb._reset()  # the parent's queue, lock and thread are not the child's


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
