"""On a real 3-master Redis Cluster every script call runs without CROSSSLOT (all keys share {tenant_id})."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from llmproxy.core import RequestContext, async_redis_from_url, redis_from_url
from llmproxy.quota import AsyncQuotaClient, QuotaClient, StaticLimits

pytestmark = pytest.mark.slow


def test_every_mode_runs_on_a_cluster_for_tenants_spread_over_slots(redis_cluster_url: str) -> None:
    client = QuotaClient(
        redis_from_url(redis_cluster_url), StaticLimits(), monthly_limits={"tokens_per_month": 10**6}
    )
    for _ in range(12):
        tenant = uuid.uuid4()
        ctx = RequestContext(tenant_id=str(tenant), api_key_id="k", endpoint="/v1/chat/completions")
        admission = client.admit(ctx, 100)
        assert admission.allowed
        assert len(admission.results) == 9
        assert client.settle(admission.reservation, 40).settled
        assert client.increment(tenant, "tokens_per_day", 5) == 45
        assert client.check(tenant, "tokens_per_month", 1).current_usage == 40
    client.close()


async def test_the_async_client_runs_on_a_cluster(redis_cluster_url: str) -> None:
    client = AsyncQuotaClient(async_redis_from_url(redis_cluster_url), StaticLimits())
    tenant = uuid.uuid4()
    admission = await client.admit(RequestContext(tenant_id=str(tenant), api_key_id="k"), 10)
    assert admission.allowed
    assert (await client.settle(admission.reservation, 0)).settled
    assert (await client.check(tenant, "tokens_per_day", 0)).current_usage == 0
    await client.aclose()


async def test_a_settle_on_a_cluster_survives_its_callers_cancellation(redis_cluster_url: str) -> None:
    """A cluster client's settles go through the write-behind too: queued, then sent even if nobody waits."""
    client = AsyncQuotaClient(async_redis_from_url(redis_cluster_url), StaticLimits())
    tenant = uuid.uuid4()
    admission = await client.admit(RequestContext(tenant_id=str(tenant)), 100)
    settling = asyncio.ensure_future(client.settle(admission.reservation, 10))
    await asyncio.sleep(0)  # queued
    settling.cancel()
    await asyncio.gather(settling, return_exceptions=True)
    await client._wb.flush()
    assert (await client.check(tenant, "tokens_per_day", 0)).current_usage == 10
    await client.aclose()
