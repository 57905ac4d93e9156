"""A background loop's worker: an asyncio task (``AsyncWorker``) or a daemon thread (``Worker``).

The one place where the asyncio and the threaded subscriber truly differ: how a loop is started, how it waits
between attempts and how it is stopped. Both have the same methods, so the subscriber is written once (async,
in ``_subscriber.py``) and its threaded twin is generated from it by ``scripts/unasync.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any


class AsyncWorker:
    """Runs ``target()`` as an asyncio task; ``stop()`` cancels it and waits for it to end."""

    def __init__(self, target: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._target = target
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def stopping(self) -> bool:
        return self._stopped

    def start(self) -> None:
        """Start the task (on the running loop) unless it was started or stopped before."""
        if self._task is not None or self._stopped:
            return
        self._task = asyncio.get_running_loop().create_task(self._target(), name=self._name)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)  # stop() cancels the task: the sleep ends there

    async def stop(self) -> None:
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Worker:
    """Runs ``target()`` in a daemon thread; ``stop()`` asks it to end and joins it."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        self._target = target
        self._name = name
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        """The loop checks this between steps: a thread cannot be cancelled from outside."""
        return self._stop.is_set()

    def start(self) -> None:
        """Start the thread unless it was started or stopped before (safe from several threads)."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._target, name=self._name, daemon=True)
            self._thread.start()

    def sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)  # returns at once when stop() is called

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
