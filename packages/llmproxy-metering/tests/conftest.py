"""Fixtures shared by the metering tests (the backends come from llmproxy.core's plugin)."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import _standin  # noqa: E402  (TEMPORARY, until core's toolkit lands: see _standin.py)

_standin.install()

from llmproxy.core import ManualClock, TenantRegistry, create_engine  # noqa: E402


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock at the real time: bucket expiries are absolute (EXPIREAT), judged by Redis's clock."""
    return ManualClock(float(int(time.time())))


@pytest.fixture
def create_tenant() -> Callable[[str], uuid.UUID]:
    """``create_tenant(database_url)``: a new registered tenant's id."""

    def create(database_url: str) -> uuid.UUID:
        engine = create_engine(database_url)
        try:
            return TenantRegistry(engine).create(f"tenant-{uuid.uuid4().hex[:12]}").id
        finally:
            engine.dispose()

    return create
