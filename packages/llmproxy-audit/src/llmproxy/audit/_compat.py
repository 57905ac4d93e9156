"""Core's write-behind, or a minimal stand-in until ``llmproxy-core`` ships it (issue 11).

TEMPORARY: deleted when core's ``WriteBehind`` / ``AsyncWriteBehind`` land on main; every user imports from
here so the switch is one file. The stand-in follows core's contract (``enqueue(command) -> bool``, never
blocks nor raises; ``flush``; ``close``/``aclose``; ``stats``) but none of its extras (Cluster slots, fork
safety, coalescing with other packages' writes).
"""

from __future__ import annotations

from typing import Any

try:  # pragma: no cover - depends on the installed core
    from llmproxy.core import fail_fast_redis_options  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover

    def fail_fast_redis_options(url: str) -> dict[str, Any]:
        from llmproxy.core import is_memory_url

        if is_memory_url(url):
            return {}
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return {"socket_timeout": 0.5, "socket_connect_timeout": 0.5, "retry": Retry(NoBackoff(), 1)}


try:  # pragma: no cover - depends on the installed core
    from llmproxy.core import AsyncWriteBehind, WriteBehind  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    import asyncio
    import collections
    import logging
    import threading
    from dataclasses import dataclass

    _log = logging.getLogger("llmproxy.audit.writebehind")

    @dataclass
    class _Stats:
        enqueued: int = 0
        sent: int = 0
        dropped: int = 0
        failed: int = 0
        pipelines: int = 0

    class WriteBehind:  # type: ignore[no-redef]
        def __init__(
            self, redis: Any, *, max_queue: int = 10_000, interval: float = 0.002, batch: int = 1000
        ):
            self.redis = redis
            self.max_queue = max_queue
            self.interval = interval
            self.batch = batch
            self.stats = _Stats()
            self._queue: collections.deque[list[Any]] = collections.deque()
            self._wake = threading.Event()
            self._idle = threading.Event()
            self._idle.set()
            self._closed = False
            self._thread = threading.Thread(target=self._run, name="audit-write-behind", daemon=True)
            self._thread.start()

        @classmethod
        def for_client(cls, redis: Any, **kwargs: Any) -> WriteBehind:
            return cls(redis, **kwargs)

        def enqueue(self, command: list[Any], script: Any = None) -> bool:
            if self._closed or len(self._queue) >= self.max_queue:
                self.stats.dropped += 1
                return False
            self._queue.append(command)
            self.stats.enqueued += 1
            self._idle.clear()
            if len(self._queue) == 1:
                self._wake.set()
            return True

        def _send(self) -> None:
            while self._queue:
                taken: list[list[Any]] = []
                while self._queue and len(taken) < self.batch:
                    taken.append(self._queue.popleft())
                try:
                    pipe = self.redis.pipeline(transaction=False)
                    for command in taken:
                        pipe.execute_command(*command)
                    pipe.execute(raise_on_error=False)
                    self.stats.sent += len(taken)
                    self.stats.pipelines += 1
                except Exception as exc:
                    self.stats.failed += len(taken)
                    _log.warning("write-behind: %d writes lost: %s", len(taken), exc)

        def _run(self) -> None:
            while True:
                self._wake.wait(0.05)
                self._wake.clear()
                if self.interval:
                    threading.Event().wait(self.interval)
                self._send()
                if not self._queue:
                    self._idle.set()
                if self._closed and not self._queue:
                    return

        def flush(self) -> None:
            self._wake.set()
            self._idle.wait(5.0)

        def close(self) -> None:
            self._closed = True
            self._wake.set()
            self._thread.join(5.0)

    class AsyncWriteBehind:  # type: ignore[no-redef]
        def __init__(
            self, redis: Any, *, max_queue: int = 10_000, interval: float = 0.002, batch: int = 1000
        ):
            self.redis = redis
            self.max_queue = max_queue
            self.interval = interval
            self.batch = batch
            self.stats = _Stats()
            self._queue: collections.deque[list[Any]] = collections.deque()
            self._task: asyncio.Task[None] | None = None
            self._closed = False

        @classmethod
        def for_client(cls, redis: Any, **kwargs: Any) -> AsyncWriteBehind:
            return cls(redis, **kwargs)

        def enqueue(self, command: list[Any], script: Any = None) -> bool:
            if self._closed or len(self._queue) >= self.max_queue:
                self.stats.dropped += 1
                return False
            self._queue.append(command)
            self.stats.enqueued += 1
            if self._task is None or self._task.done():
                try:
                    self._task = asyncio.get_running_loop().create_task(self._later())
                except RuntimeError:
                    pass
            return True

        async def _later(self) -> None:
            await asyncio.sleep(self.interval)
            await self._send()

        async def _send(self) -> None:
            while self._queue:
                taken: list[list[Any]] = []
                while self._queue and len(taken) < self.batch:
                    taken.append(self._queue.popleft())
                try:
                    pipe = self.redis.pipeline(transaction=False)
                    for command in taken:
                        pipe.execute_command(*command)
                    await pipe.execute(raise_on_error=False)
                    self.stats.sent += len(taken)
                    self.stats.pipelines += 1
                except Exception as exc:
                    self.stats.failed += len(taken)
                    _log.warning("write-behind: %d writes lost: %s", len(taken), exc)

        async def flush(self) -> None:
            if self._task is not None and not self._task.done():
                await self._task
            await self._send()

        async def aclose(self) -> None:
            await self.flush()
            self._closed = True


__all__ = ["AsyncWriteBehind", "WriteBehind", "fail_fast_redis_options"]
