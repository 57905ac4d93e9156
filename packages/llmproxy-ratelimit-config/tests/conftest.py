"""Fixtures shared by the ratelimit-config tests (the backends come from llmproxy.core's plugin)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from llmproxy.core import TenantRegistry, create_async_engine, create_engine
from llmproxy.ratelimit_config import (
    ApiKeyLimit,
    ApiKeyPolicy,
    Budget,
    Budgets,
    EndpointLimit,
    GlobalLimit,
    ModelLimit,
    TenantRateLimitConfiguration,
)

ConfigFactory = Callable[..., TenantRateLimitConfiguration]


def premium_config(tenant_id: uuid.UUID, scale: int = 10) -> TenantRateLimitConfiguration:
    return TenantRateLimitConfiguration(
        tenant_id=tenant_id,
        global_limit=GlobalLimit(
            requests_per_minute=1000 * scale,
            requests_per_day=100_000 * scale,
            tokens_per_minute=100_000 * scale,
            tokens_per_day=10_000_000 * scale,
        ),
        api_key_limit=ApiKeyLimit(requests_per_minute=100 * scale, tokens_per_minute=10_000 * scale),
        endpoint_limits={
            "/v1/chat/completions": EndpointLimit(
                requests_per_minute=60 * scale, tokens_per_minute=100_000 * scale, burst_capacity=120 * scale
            )
        },
        # The per-model limits, budgets and key policies too, so every service test carries them through
        # the database, the Redis JSON and L1.
        model_limits={
            "gpt-4o": ModelLimit(requests_per_minute=10 * scale, tokens_per_minute=None, tokens_per_day=0),
            "gpt-4o-mini": ModelLimit(),
        },
        budgets=Budgets(
            day=Budget(limit_micros=5_000_000 * scale, soft_threshold_percent=90, utc_offset_hours=-5),
            month=Budget(limit_micros=100_000_000 * scale),
        ),
        api_keys={
            "key-batch": ApiKeyPolicy(
                allowed_models=frozenset({"gpt-4o-mini"}), budgets=Budgets(day=Budget(limit_micros=scale))
            ),
            "key-locked": ApiKeyPolicy(allowed_models=frozenset()),
            "key-spend": ApiKeyPolicy(budgets=Budgets(month=Budget(limit_micros=0, utc_offset_hours=14))),
        },
    )


@pytest.fixture
def make_config() -> ConfigFactory:
    """``make_config(tenant_id, scale=10)``: a valid configuration that differs from the defaults, with
    model limits, tenant and key budgets, and key policies (an allow-list, an empty one, budgets only)."""
    return premium_config


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A sync engine on the migrated database (SQLite and PostgreSQL)."""
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
async def async_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An async engine on the same database as ``engine``."""
    engine = create_async_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def tenant_id(engine: Engine) -> uuid.UUID:
    """A new tenant in ``engine``'s database."""
    return TenantRegistry(engine).create(f"tenant-{uuid.uuid4().hex[:8]}").id


@pytest.fixture
def create_tenant() -> Callable[[str], uuid.UUID]:
    """``create_tenant(database_url)``: a new tenant's id."""

    def create(database_url: str) -> uuid.UUID:
        engine = create_engine(database_url)
        try:
            return TenantRegistry(engine).create(f"tenant-{uuid.uuid4().hex[:12]}").id
        finally:
            engine.dispose()

    return create
