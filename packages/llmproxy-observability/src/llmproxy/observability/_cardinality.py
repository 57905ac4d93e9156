"""Bounded label values: at most N distinct values per metric and label, the rest become ``other``.

LiteLLM's Prometheus metrics leaked memory from label explosion (its issue #12159): every distinct tenant,
key or model name is a series the SDK keeps forever. A :class:`BoundedValues` admits the first N values it
sees and maps every later one to ``other``, counting each replacement.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Collection

from ._semconv import OVERFLOW_VALUE


class BoundedValues:
    """The label values one metric may carry for one attribute.

    ``known`` (optional) is an allow-list: a value outside it is ``other`` at once. ``on_overflow(n)`` is
    called (outside the lock) each time a value is replaced.
    """

    __slots__ = ("__weakref__", "_lock", "_seen", "known", "limit", "on_overflow", "overflowed")

    def __init__(
        self,
        limit: int,
        *,
        known: Collection[str] | None = None,
        on_overflow: Callable[[], None] | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError(f"the cardinality limit must be at least 1, got {limit}")
        self.limit = limit
        self.known = frozenset(known) if known is not None else None
        self.on_overflow = on_overflow
        self.overflowed = 0
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        _reset_after_fork.add(self)

    def __call__(self, value: str) -> str:
        # The common case — a value already admitted — takes no lock: set membership is atomic.
        if value in self._seen:
            return value
        if self.known is None or value in self.known:
            with self._lock:
                if value in self._seen or len(self._seen) < self.limit:
                    self._seen.add(value)
                    return value
        self.overflowed += 1
        if self.on_overflow is not None:
            self.on_overflow()
        return OVERFLOW_VALUE

    @property
    def admitted(self) -> int:
        """How many distinct values were admitted so far."""
        return len(self._seen)

    def _after_fork(self) -> None:
        # A lock another thread held at fork time stays held forever in the child.
        self._lock = threading.Lock()


_reset_after_fork: weakref.WeakSet[BoundedValues] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for bounded in list(_reset_after_fork):
        bounded._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
