"""Invalidation subscribers: a thread (sync service) or an asyncio task (async service).

Both reconnect after Redis goes away, and treat every (re)subscription as "messages may have been missed",
so the service clears its whole L1 then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("llmproxy.ratelimit_config")

POLL_SECONDS = 0.2
MAX_BACKOFF = 1.0  # reconnect at least once a second, so recovery stays inside the 1 s promise


class ThreadSubscriber:
    def __init__(
        self,
        redis: Any,
        channel: str,
        on_message: Callable[[bytes | str], None],
        on_subscribed: Callable[[], None],
    ) -> None:
        self._redis = redis
        self._channel = channel
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._stop = threading.Event()
        self.subscribed = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(
                target=self._run, name="llmproxy-ratelimit-config-invalidations", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.05
        failing = False
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self._redis.pubsub()
                pubsub.subscribe(self._channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=POLL_SECONDS)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self._on_subscribed()
                        self.subscribed.set()
                        if failing:
                            logger.info("invalidation subscriber reconnected to Redis")
                        backoff, failing = 0.05, False
                    elif message["type"] == "message":
                        self._on_message(message["data"])
            except Exception as exc:
                self.subscribed.clear()
                if not failing:
                    logger.warning(
                        "invalidation subscriber lost Redis (%s: %s); reconnecting", type(exc).__name__, exc
                    )
                failing = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()
        self.subscribed.clear()


class TaskSubscriber:
    def __init__(
        self,
        redis: Any,
        channel: str,
        on_message: Callable[[bytes | str], None],
        on_subscribed: Callable[[], None],
    ) -> None:
        self._redis = redis
        self._channel = channel
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is not None or self._stopped:
            return
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="llmproxy-ratelimit-config-invalidations"
        )

    async def stop(self) -> None:
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        backoff = 0.05
        failing = False
        while True:
            pubsub = None
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(self._channel)
                while True:
                    message = await pubsub.get_message(timeout=POLL_SECONDS)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self._on_subscribed()
                        self.subscribed.set()
                        if failing:
                            logger.info("invalidation subscriber reconnected to Redis")
                        backoff, failing = 0.05, False
                    elif message["type"] == "message":
                        self._on_message(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.subscribed.clear()
                if not failing:
                    logger.warning(
                        "invalidation subscriber lost Redis (%s: %s); reconnecting", type(exc).__name__, exc
                    )
                failing = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
