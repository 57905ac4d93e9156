"""Fixtures for the llmproxy-quota tests: a tenant, a fixed limits source, clients on every backend."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from llmproxy.core import ManualClock, async_redis_from_url, redis_from_url, set_current_context
from llmproxy.quota import AsyncQuotaClient, QuotaClient, StaticLimits
from llmproxy.ratelimit_config import ApiKeyLimit, EndpointLimit, GlobalLimit, TenantRateLimitConfiguration

#: 2026-03-31 23:59:00 UTC: a minute before a day and a month end.
MONTH_END = 1_775_001_540.0


def make_config(
    tenant_id: uuid.UUID,
    *,
    rpm: int = 1000,
    rpd: int = 100_000,
    tpm: int = 100_000,
    tpd: int = 10_000_000,
    key_rpm: int = 100,
    key_tpm: int = 10_000,
    endpoints: dict[str, EndpointLimit] | None = None,
) -> TenantRateLimitConfiguration:
    return TenantRateLimitConfiguration(
        tenant_id=tenant_id,
        global_limit=GlobalLimit(
            requests_per_minute=rpm, requests_per_day=rpd, tokens_per_minute=tpm, tokens_per_day=tpd
        ),
        api_key_limit=ApiKeyLimit(requests_per_minute=key_rpm, tokens_per_minute=key_tpm),
        endpoint_limits=endpoints or {},
    )


@pytest.fixture(autouse=True)
def _no_context_left_behind() -> Iterator[None]:
    """The WSGI tests' stand-ins for auth bind a request context in the test's thread and, unlike auth, never
    reset it: cleared after each test, so a later suite in the same run does not start with a tenant."""
    yield
    set_current_context(None)


@pytest.fixture
def tenant() -> uuid.UUID:
    return uuid.uuid4()


class TenantLimits(StaticLimits):
    """A fixed limits source for one test tenant; ``configure(**limits)`` changes that tenant's limits."""

    def __init__(self, tenant: uuid.UUID) -> None:
        super().__init__({tenant: make_config(tenant)})
        self.tenant = tenant

    def configure(self, **kwargs: Any) -> None:
        self.set(make_config(self.tenant, **kwargs))


@pytest.fixture
def limits(tenant: uuid.UUID) -> TenantLimits:
    return TenantLimits(tenant)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(MONTH_END - 3600)


@pytest.fixture
def make_client(redis_url: str, limits: TenantLimits, clock: ManualClock) -> Iterator[Any]:
    made: list[QuotaClient] = []

    def make(**kwargs: Any) -> QuotaClient:
        kwargs.setdefault("clock", clock)
        client = QuotaClient(redis_from_url(redis_url), kwargs.pop("limits", limits), **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(make_client: Any) -> QuotaClient:
    return make_client()  # type: ignore[no-any-return]


@pytest.fixture
async def aclient(
    redis_url: str, limits: TenantLimits, clock: ManualClock
) -> AsyncIterator[AsyncQuotaClient]:
    client = AsyncQuotaClient(async_redis_from_url(redis_url), limits, clock=clock)
    yield client
    await client.aclose()
