from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from llmproxy.core.testing import Backend
from llmproxy.flags import FlagsClient


def _eventually(check: Callable[[], bool], timeout: float = 3.0) -> bool:
    """Wait for something another thread or process does (not for time to pass: no clock moves here)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


Eventually = Callable[..., bool]


@pytest.fixture
def eventually() -> Eventually:
    """``eventually(check, timeout=3.0)``: wait until ``check()`` holds (another thread or process acts)."""
    return _eventually


@pytest.fixture
def make_client(backend: Backend) -> Iterator[Callable[..., FlagsClient]]:
    """``make_client(**options)``: a FlagsClient on the test's backend (started on demand), closed after."""
    clients: list[FlagsClient] = []

    def make(**kwargs: Any) -> FlagsClient:
        client = FlagsClient.from_urls(backend.redis_url, backend.database_url, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
