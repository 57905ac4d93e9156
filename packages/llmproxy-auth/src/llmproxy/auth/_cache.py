"""A small in-process cache with a deadline per entry.

A plain dict is several times faster than a locked ``cachetools`` cache on the hit path, and the hit path is
what the L1 and token caches exist for. Eviction is oldest-inserted first; every operation is a single dict
operation, so the cache is safe to share between threads under the GIL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class DeadlineCache(Generic[K, V]):
    __slots__ = ("_data", "_maxsize", "_timer")

    def __init__(self, maxsize: int, timer: Callable[[], float]) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self._data: dict[K, tuple[float, V]] = {}
        self._maxsize = maxsize
        self._timer = timer

    def get(self, key: K) -> tuple[bool, V | None]:
        """``(True, value)`` for a live entry, ``(False, None)`` otherwise."""
        entry = self._data.get(key)
        if entry is None:
            return False, None
        if entry[0] <= self._timer():
            self._data.pop(key, None)
            return False, None
        return True, entry[1]

    def put(self, key: K, value: V, deadline: float) -> None:
        if deadline <= self._timer():
            return
        data = self._data
        while len(data) >= self._maxsize:
            try:
                data.pop(next(iter(data)))
            except (StopIteration, KeyError, RuntimeError):
                break
        data[key] = (deadline, value)

    def pop(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
