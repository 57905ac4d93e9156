"""``Flusher`` / ``AsyncFlusher``: run the flush flow once, or in a loop with retries (the worker)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from llmproxy.core import Flow, arun_flow, cancel_and_wait, raise_if_cancelling, run_flow

from ._flush import FlushOp, FlushResult, flush_flow, retry_delay
from ._io import DEFAULT_FLUSHER, AsyncPerformer, SyncPerformer
from ._models import MeteringOptions

logger = logging.getLogger("llmproxy.metering.flush")


class _Schedule:
    """When to sweep every registered tenant, and how long to wait after a run."""

    def __init__(self, options: MeteringOptions) -> None:
        self.options = options
        self.failures = 0
        self._swept_at: float | None = None

    def sweep_due(self) -> bool:
        every = self.options.sweep_interval
        return self._swept_at is None or (every > 0 and time.monotonic() - self._swept_at >= every)

    def done(self, result: FlushResult) -> float:
        self.failures = 0
        if result.swept:
            self._swept_at = time.monotonic()
        # an idle interval (nothing to flush) is not news: DEBUG, so a quiet gateway's log stays quiet
        logger.log(
            logging.INFO if result.buckets else logging.DEBUG,
            "flushed %d bucket(s) of %d tenant(s): %d row(s)",
            result.buckets,
            result.tenants,
            result.rows,
        )
        return self.options.flush_interval

    def failed(self, exc: BaseException) -> float:
        self.failures += 1
        delay = retry_delay(self.failures, self.options.flush_interval)
        logger.warning(
            "flush failed (%d in a row), retrying in %.1f s: %s: %s",
            self.failures,
            delay,
            type(exc).__name__,
            exc,
        )
        return delay


class Flusher:
    """Copies touched buckets from Redis to PostgreSQL (sync). Any number may run at once.

    ``run_once()`` flushes now and returns what it wrote (errors propagate); ``run()`` loops every
    ``flush_interval`` until ``stop`` is set, retrying failures with backoff capped at the interval.
    """

    def __init__(
        self,
        redis: Any,
        engine: Engine,
        *,
        options: MeteringOptions | None = None,
        name: str = DEFAULT_FLUSHER,
        **overrides: Any,
    ) -> None:
        self.options = MeteringOptions.build(options, overrides)
        self.name = name
        self._perform = SyncPerformer(redis, engine, name)
        self._schedule = _Schedule(self.options)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def run_once(self, *, sweep: bool | None = None) -> FlushResult:
        sweep = self._schedule.sweep_due() if sweep is None else sweep
        flow: Flow[FlushOp, FlushResult] = flush_flow(self.options, self.name, sweep=sweep)
        # mypy infers R = Never from run_flow's "Generator[Op, Any, R] | R" parameter (arun_flow is fine)
        result: FlushResult = run_flow(flow, self._perform)
        self._schedule.done(result)
        return result

    def run(
        self, stop: threading.Event | None = None, *, on_result: Callable[[FlushResult], None] | None = None
    ) -> None:
        stop = stop or self._stop
        while not stop.is_set():
            try:
                result = self.run_once()
            except Exception as exc:
                wait = self._schedule.failed(exc)
            else:
                wait = self.options.flush_interval
                if on_result is not None:
                    on_result(result)
            stop.wait(wait)

    def start(self) -> threading.Thread:
        """Run the loop in a daemon thread (``stop()`` ends it)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="metering-flusher", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


class AsyncFlusher:
    """The asyncio twin of :class:`Flusher`; ``start()`` runs the loop as a task (in an app's lifespan)."""

    def __init__(
        self,
        redis: Any,
        engine: AsyncEngine,
        *,
        options: MeteringOptions | None = None,
        name: str = DEFAULT_FLUSHER,
        **overrides: Any,
    ) -> None:
        self.options = MeteringOptions.build(options, overrides)
        self.name = name
        self._perform = AsyncPerformer(redis, engine, name)
        self._schedule = _Schedule(self.options)
        self._task: asyncio.Task[None] | None = None

    async def run_once(self, *, sweep: bool | None = None) -> FlushResult:
        sweep = self._schedule.sweep_due() if sweep is None else sweep
        result: FlushResult = await arun_flow(flush_flow(self.options, self.name, sweep=sweep), self._perform)
        self._schedule.done(result)
        return result

    async def run(self) -> None:
        while True:
            raise_if_cancelling()  # a cancel that a driver swallowed must still stop this loop
            try:
                await self.run_once()
            except Exception as exc:
                wait = self._schedule.failed(exc)
            else:
                wait = self.options.flush_interval
            await asyncio.sleep(wait)

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="metering-flusher")
        return self._task

    async def stop(self, *, final_flush: bool = True) -> None:
        """Cancel the loop; with ``final_flush``, flush once more (errors logged, not raised)."""
        task, self._task = self._task, None
        if task is not None and not await cancel_and_wait(task):
            logger.warning("the flusher task did not stop within 5 s")
        if final_flush:
            try:
                await self.run_once()
            except Exception as exc:
                logger.warning("final flush failed: %s: %s", type(exc).__name__, exc)
