"""Waiting in tests for what happens a moment later (a write-behind, a consumer, another process)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], *, timeout: float = 10.0, interval: float = 0.02) -> T:
    """``probe()``'s first truthy answer, asked every ``interval`` seconds; AssertionError (with the last
    answer) when none came within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout} s (last answer: {found!r})")
        time.sleep(interval)
