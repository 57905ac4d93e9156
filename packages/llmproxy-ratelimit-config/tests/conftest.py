"""Fixtures shared by the ratelimit-config tests (the backends come from llmproxy.core's plugin)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from llmproxy.core import TenantRegistry, create_engine
from llmproxy.ratelimit_config import ApiKeyLimit, EndpointLimit, GlobalLimit, TenantRateLimitConfiguration

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
    )


@pytest.fixture
def make_config() -> ConfigFactory:
    """``make_config(tenant_id, scale=10)``: a valid configuration that differs from the defaults."""
    return premium_config


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
