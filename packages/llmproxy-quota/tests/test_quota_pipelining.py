"""The asyncio client's calls go through its Redis client's write-behind (llmproxy.core.AsyncWriteBehind),
which coalesces concurrent calls into pipelines: same decisions, fewer round trips; settles survive their
caller's cancellation; failures reach every caller of a batch."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from llmproxy.core import ManualClock, RequestContext, async_redis_from_url, is_memory_url
from llmproxy.core.testing import Backend
from llmproxy.quota import AsyncQuotaClient, StaticLimits
from llmproxy.ratelimit_config import DEFAULTS, GlobalLimit

from .conftest import make_config


def counting_pipelines(client: AsyncQuotaClient) -> list[int]:
    """Record the size of every pipeline the client sends (on its held connection or through redis-py's)."""
    sizes: list[int] = []
    line: Any = client._wb.line
    original = line.call_many

    async def call_many(commands: Any) -> Any:
        sizes.append(len(commands))
        return await original(commands)

    line.call_many = call_many
    return sizes


async def test_concurrent_admits_share_round_trips_and_admit_exactly_the_limit(
    redis_url: str, tenant: uuid.UUID, clock: ManualClock
) -> None:
    limits = StaticLimits({tenant: make_config(tenant, rpm=100, rpd=10**6)})
    client = AsyncQuotaClient(async_redis_from_url(redis_url), limits, clock=clock, deny_cache=False)
    sizes = counting_pipelines(client)
    ctx = RequestContext(tenant_id=str(tenant))
    await client.check(tenant, "requests_per_day", 0)  # the script is loaded
    admissions = await asyncio.gather(*(client.admit(ctx, 0) for _ in range(300)))
    assert sum(a.allowed for a in admissions) == 100
    assert (await client.check(tenant, "requests_per_day", 0)).current_usage == 100
    if not is_memory_url(redis_url):  # (in-process fakeredis may or may not yield while it answers)
        # 2 calls went out alone (max_in_flight); the other 298 left in a few pipelines
        assert sum(sizes) == 298
        assert len(sizes) <= 10
    await client.aclose()


async def test_a_settle_is_sent_even_when_its_caller_is_cancelled(
    redis_url: str, tenant: uuid.UUID, clock: ManualClock
) -> None:
    client = AsyncQuotaClient(async_redis_from_url(redis_url), StaticLimits({}), clock=clock)
    ctx = RequestContext(tenant_id=str(tenant))
    admissions = [await client.admit(ctx, 100) for _ in range(5)]
    tasks = [asyncio.ensure_future(client.settle(a.reservation, 10)) for a in admissions]
    await asyncio.sleep(0)  # each settle queued itself
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await client._wb.flush()
    assert (await client.check(tenant, "tokens_per_day", 0)).current_usage == 50  # all 5 refunded to 10
    await client.aclose()


async def test_closing_the_client_sends_queued_settles_first(
    redis_url: str, tenant: uuid.UUID, clock: ManualClock
) -> None:
    client = AsyncQuotaClient(async_redis_from_url(redis_url), StaticLimits({}), clock=clock)
    admission = await client.admit(RequestContext(tenant_id=str(tenant)), 100)
    task = asyncio.ensure_future(client.settle(admission.reservation, 1))
    await asyncio.sleep(0)
    task.cancel()
    await client.aclose()
    check = AsyncQuotaClient(async_redis_from_url(redis_url), StaticLimits({}), clock=clock)
    assert (await check.check(tenant, "tokens_per_day", 0)).current_usage == 1
    await check.aclose()


async def test_a_flushed_script_is_loaded_again_for_a_pipeline(
    redis_url: str, tenant: uuid.UUID, clock: ManualClock
) -> None:
    client = AsyncQuotaClient(async_redis_from_url(redis_url), StaticLimits({}), clock=clock)
    ctx = RequestContext(tenant_id=str(tenant))
    assert (await client.admit(ctx, 1)).allowed
    await client.redis.script_flush()
    admissions = await asyncio.gather(*(client.admit(ctx, 1) for _ in range(20)))
    assert all(a.allowed and not a.degraded for a in admissions)
    assert (await client.check(tenant, "requests_per_day", 0)).current_usage == 21
    await client.aclose()


@pytest.mark.parametrize("policy", ["open", "closed"])
async def test_a_cut_connection_reaches_every_caller_of_a_batch_as_the_failure_policy(
    proxied_backend: Backend, manual_clock: ManualClock, policy: str
) -> None:
    tenant = uuid.uuid4()
    config = DEFAULTS.for_tenant(tenant).model_copy(
        update={
            "global_limit": GlobalLimit(
                requests_per_minute=10**6,
                requests_per_day=10**6,
                tokens_per_minute=10**9,
                tokens_per_day=10**9,
            )
        }
    )
    redis = async_redis_from_url(
        proxied_backend.redis_url, retry=Retry(NoBackoff(), 0), socket_timeout=2, socket_connect_timeout=2
    )
    client = AsyncQuotaClient(
        redis, StaticLimits({tenant: config}), clock=manual_clock, failure_policy=policy
    )
    ctx = RequestContext(tenant_id=str(tenant))
    assert (await client.admit(ctx, 1)).allowed
    assert proxied_backend.redis_proxy is not None
    proxied_backend.redis_proxy.cut()
    admissions = await asyncio.gather(*(client.admit(ctx, 1) for _ in range(30)))
    assert all(a.degraded for a in admissions)
    assert all(a.allowed is (policy == "open") for a in admissions)
    assert client.stats.redis_failures >= 1
    proxied_backend.redis_proxy.restore()
    await client.aclose()


async def test_a_settle_rides_along_with_the_next_call(
    redis_url: str, tenant: uuid.UUID, clock: ManualClock
) -> None:
    """One request at a time: the settle of a request and the admit of the next share one round trip."""
    client = AsyncQuotaClient(async_redis_from_url(redis_url), StaticLimits({}), clock=clock)
    ctx = RequestContext(tenant_id=str(tenant))
    first = await client.admit(ctx, 100)
    sizes = counting_pipelines(client)
    settling = asyncio.ensure_future(client.settle(first.reservation, 30))
    await asyncio.sleep(0)  # the request's task queued its settle and waits for company
    second = await client.admit(ctx, 100)
    assert (await settling).settled
    assert second.allowed
    if not is_memory_url(redis_url):
        assert sizes == [2]  # the settle and the next admit: one pipeline, no other round trip
    assert (await client.check(tenant, "tokens_per_day", 0)).current_usage == 130
    await client.aclose()


async def test_a_lone_settle_goes_out_after_a_few_milliseconds(
    redis_url: str, tenant: uuid.UUID, clock: ManualClock
) -> None:
    client = AsyncQuotaClient(async_redis_from_url(redis_url), StaticLimits({}), clock=clock)
    admission = await client.admit(RequestContext(tenant_id=str(tenant)), 100)
    settlement = await asyncio.wait_for(client.settle(admission.reservation, 0), timeout=2)
    assert settlement.settled
    assert (await client.check(tenant, "tokens_per_day", 0)).current_usage == 0
    await client.aclose()


async def test_a_queued_admit_whose_caller_gave_up_is_not_sent(
    redis_url: str, tenant: uuid.UUID, clock: ManualClock
) -> None:
    client = AsyncQuotaClient(async_redis_from_url(redis_url), StaticLimits({}), clock=clock)
    ctx = RequestContext(tenant_id=str(tenant))
    await client.check(tenant, "requests_per_day", 0)
    direct = [asyncio.ensure_future(client.admit(ctx, 0)) for _ in range(2)]
    await asyncio.sleep(0)  # both went out directly: 2 round trips in flight
    queued = asyncio.ensure_future(client.admit(ctx, 0))
    await asyncio.sleep(0)
    queued.cancel()
    await asyncio.gather(*direct, queued, return_exceptions=True)
    await client._wb.flush()
    usage = (await client.check(tenant, "requests_per_day", 0)).current_usage
    if is_memory_url(redis_url):  # in-process fakeredis may answer before anything is in flight: 2 or 3 sent
        assert usage in (2, 3)
    else:
        assert usage == 2
    await client.aclose()


async def test_a_cancelled_flusher_fails_its_waiting_calls_instead_of_hanging(
    redis_url: str, tenant: uuid.UUID, clock: ManualClock
) -> None:
    client = AsyncQuotaClient(async_redis_from_url(redis_url), StaticLimits({}), clock=clock)
    ctx = RequestContext(tenant_id=str(tenant))
    admission = await client.admit(ctx, 100)
    settling = asyncio.ensure_future(client.settle(admission.reservation, 10))
    await asyncio.sleep(0)
    wb = client._wb
    wb._start_flusher()  # what the timer does...
    assert wb._flusher is not None
    wb._flusher.cancel()  # ...as a shutdown hook cancels every task
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(settling, timeout=2)
    again = await client.admit(ctx, 100)  # the client still works
    assert (await asyncio.wait_for(client.settle(again.reservation, 10), timeout=2)).settled
    await client.aclose()
