# Generated from _subscriber.py by scripts/unasync.py (`nox -s unasync`): do not edit.
"""The invalidation subscriber: drops L1 entries named on the channel, reconnecting after Redis goes away.

Every (re)subscription counts as "messages may have been missed", so the service clears its whole L1 then.
The asyncio class (a task) is the source; the threaded class (a daemon thread) is generated from it by
``scripts/unasync.py``; what differs between them is the worker, in ``_workers.py``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from ._workers import Worker

logger = logging.getLogger("llmproxy.ratelimit_config")

POLL_SECONDS = 0.2
MAX_BACKOFF = 1.0  # reconnect at least once a second, so recovery stays inside the 1 s promise


class Subscriber:
    """Calls ``on_message(data)`` per message on ``channel``, ``on_subscribed()`` per (re)subscription."""

    def __init__(
        self,
        redis: Any,  # a Redis or RedisCluster client: redis-py's stubs give them no common pubsub()
        channel: str,
        on_message: Callable[[bytes | str], None],
        on_subscribed: Callable[[], None],
    ) -> None:
        self._redis = redis
        self._channel = channel
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self.subscribed = threading.Event()
        self._worker = Worker(self._run, "llmproxy-ratelimit-config-invalidations")

    @property
    def running(self) -> bool:
        return self._worker.running

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self._worker.stop()

    def _run(self) -> None:
        backoff = 0.05
        failing = False
        try:
            while not self._worker.stopping:
                pubsub = None
                try:
                    pubsub = self._redis.pubsub()
                    pubsub.subscribe(self._channel)
                    while not self._worker.stopping:
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
                            "invalidation subscriber lost Redis (%s: %s); reconnecting",
                            type(exc).__name__,
                            exc,
                        )
                    failing = True
                    self._worker.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
                finally:
                    if pubsub is not None:
                        with contextlib.suppress(Exception):
                            pubsub.close()
        finally:
            self.subscribed.clear()
