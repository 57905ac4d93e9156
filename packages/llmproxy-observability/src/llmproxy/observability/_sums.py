"""Sums kept in a dict and reported when metrics are collected (OpenTelemetry's observable instruments).

A synchronous ``Counter.add`` costs a few microseconds in the SDK (attribute validation, hashing, the
exemplar reservoir) and the middleware makes seven of them per LLM request (active requests in and out,
requests, input and output tokens, active connections in and out). Adding to a dict entry under a lock costs
a fraction of that, and the collected data is the same cumulative sum: the SDK reads it through the
instrument's callback at each export or scrape. Histograms have no observable form, so they stay
synchronous.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation


class Sums:
    """Running sums by attribute set; ``observe`` is the observable instrument's callback."""

    __slots__ = ("__weakref__", "_lock", "_values")

    def __init__(self, lock: SharedLock | None = None) -> None:
        self._values: dict[Key, int | float] = {}
        self._lock = lock or SharedLock()
        _reset_after_fork.add(self._lock)

    @property
    def lock(self) -> SharedLock:
        """Hold it to make several :meth:`bump` calls (on sums sharing this lock) at the price of one."""
        return self._lock

    def add(self, amount: float, attributes: Mapping[str, Any]) -> None:
        # The callers build each instrument's attribute dicts in one fixed key order, so the items tuple is
        # a stable key without sorting.
        self.add_key(tuple(attributes.items()), amount)

    def add_key(self, key: Key, amount: float) -> None:
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def bump(self, key: Key, amount: float) -> None:
        """:meth:`add_key` for a caller already holding :attr:`lock`."""
        self._values[key] = self._values.get(key, 0) + amount

    def value(self, attributes: Mapping[str, Any]) -> int | float:
        return self._values.get(tuple(attributes.items()), 0)

    def observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            items = list(self._values.items())
        return [Observation(value, dict(key)) for key, value in items]


Key = tuple[tuple[str, Any], ...]


class SharedLock:
    """A lock several :class:`Sums` may share, re-created in a forked child (a lock another thread held at
    fork time would stay held there forever)."""

    __slots__ = ("__weakref__", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *_: object) -> None:
        self._lock.release()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()


_reset_after_fork: weakref.WeakSet[SharedLock] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for lock in list(_reset_after_fork):
        lock._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
