"""Fixtures shared by the metering tests (the backends come from llmproxy.core's plugin)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from llmproxy.core import ManualClock, TenantRegistry, create_engine


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
