"""guard / guarded for worker loops, sync and async; the async client mirrors the sync one."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from llmproxy.core import (
    RequestContext,
    report_usage,
    reset_current_context,
    set_current_context,
    use_context,
)
from llmproxy.quota import AsyncQuotaClient, InvalidQuotaRequest, QuotaClient, QuotaExceeded


def test_guard_settles_with_the_reported_tokens(client: QuotaClient, tenant: uuid.UUID) -> None:
    with client.guard(RequestContext(tenant_id=str(tenant)), cost=500) as guard:
        assert guard.admission.allowed
        guard.report(120)
    assert client.check(tenant, "tokens_per_day", 0).current_usage == 120


def test_guard_reads_the_usage_channel(client: QuotaClient, tenant: uuid.UUID) -> None:
    with client.guard(RequestContext(tenant_id=str(tenant)), cost=500):
        report_usage(input_tokens=30, output_tokens=12)
    assert client.check(tenant, "tokens_per_day", 0).current_usage == 42


def test_guard_keeps_the_estimate_when_nothing_is_reported(client: QuotaClient, tenant: uuid.UUID) -> None:
    with client.guard(RequestContext(tenant_id=str(tenant)), cost=500):
        pass
    assert client.check(tenant, "tokens_per_day", 0).current_usage == 500


def test_guard_refunds_when_the_block_fails_before_reporting(client: QuotaClient, tenant: uuid.UUID) -> None:
    with pytest.raises(ZeroDivisionError), client.guard(RequestContext(tenant_id=str(tenant)), cost=500):
        _ = 1 / 0
    assert client.check(tenant, "tokens_per_day", 0).current_usage == 0


def test_guard_raises_quota_exceeded_with_the_admission(
    client: QuotaClient, limits: Any, tenant: uuid.UUID
) -> None:
    limits.configure(tpm=100)
    with pytest.raises(QuotaExceeded) as err, client.guard(RequestContext(tenant_id=str(tenant)), cost=101):
        pytest.fail("the block must not run")
    assert err.value.admission.rejected[0].name == "tenant.tokens_per_minute"


def test_guarded_uses_the_current_context(client: QuotaClient, limits: Any, tenant: uuid.UUID) -> None:
    limits.configure(rpm=2)

    @client.guarded(cost=10)
    def work(x: int) -> int:
        return x * 2

    with use_context(RequestContext(tenant_id=str(tenant))):
        assert work(2) == 4
        assert work(3) == 6
        with pytest.raises(QuotaExceeded):
            work(4)


def test_guarded_without_a_context_is_a_clear_error(client: QuotaClient) -> None:
    @client.guarded()
    def work() -> None:
        pass

    token = set_current_context(None)  # other tests' middlewares may have left one in this thread
    try:
        with pytest.raises(InvalidQuotaRequest, match="ctx"):
            work()
    finally:
        reset_current_context(token)


async def test_async_guard_settles_with_the_usage_channel(
    aclient: AsyncQuotaClient, tenant: uuid.UUID
) -> None:
    async with aclient.guard(RequestContext(tenant_id=str(tenant)), cost=300) as guard:
        assert guard.admission.allowed
        report_usage(input_tokens=5, output_tokens=5)
    assert (await aclient.check(tenant, "tokens_per_day", 0)).current_usage == 10


async def test_async_guarded_rejects_over_the_limit(
    aclient: AsyncQuotaClient, limits: Any, tenant: uuid.UUID
) -> None:
    limits.configure(rpm=1)

    @aclient.guarded(cost=1)
    async def work() -> str:
        return "done"

    with use_context(RequestContext(tenant_id=str(tenant))):
        assert await work() == "done"
        with pytest.raises(QuotaExceeded):
            await work()


async def test_the_async_client_admits_settles_checks_and_increments(
    aclient: AsyncQuotaClient, limits: Any, tenant: uuid.UUID
) -> None:
    limits.configure(rpm=2)
    ctx = RequestContext(tenant_id=str(tenant))
    first = await aclient.admit(ctx, 100)
    assert first.allowed
    assert (await aclient.admit(ctx)).allowed
    assert not (await aclient.admit(ctx)).allowed
    assert (await aclient.settle(first.reservation, 40)).charged == -60
    assert await aclient.increment(tenant, "tokens_per_day", 2) == 42
    assert not (await aclient.check(tenant, "requests_per_minute", 1)).allowed


async def test_the_async_client_accepts_an_async_limits_source(
    redis_url: str, limits: Any, tenant: uuid.UUID
) -> None:
    from llmproxy.core import async_redis_from_url

    class AsyncSource:
        async def get(self, tenant_id: uuid.UUID) -> Any:
            return limits.get(tenant_id)

    client = AsyncQuotaClient(async_redis_from_url(redis_url), AsyncSource())
    assert (await client.admit(RequestContext(tenant_id=str(tenant)), 1)).allowed
    await client.aclose()


def test_the_sync_client_refuses_an_async_limits_source(redis_url: str, tenant: uuid.UUID) -> None:
    from llmproxy.core import redis_from_url

    class AsyncSource:
        async def get(self, tenant_id: uuid.UUID) -> Any:
            raise AssertionError

    client = QuotaClient(redis_from_url(redis_url), AsyncSource())
    with pytest.raises(TypeError, match="AsyncQuotaClient"):
        client.admit(RequestContext(tenant_id=str(tenant)))
    client.close()


def test_a_guard_inside_another_block_shares_its_usage_channel(
    client: QuotaClient, tenant: uuid.UUID
) -> None:
    from llmproxy.core import Usage, current_usage, reset_usage, use_usage

    outer = Usage()  # e.g. metering's track around the guard
    token = use_usage(outer)
    try:
        with client.guard(RequestContext(tenant_id=str(tenant)), cost=500) as guard:
            assert guard.usage is outer
            report_usage(input_tokens=30, output_tokens=12)
        assert current_usage() is outer  # the guard's exit put the outer block's channel back
    finally:
        reset_usage(token)
    assert outer.total_tokens == 42  # one report reached both blocks
    assert client.check(tenant, "tokens_per_day", 0).current_usage == 42


def test_quota_exceeded_names_its_http_status(client: QuotaClient, tenant: uuid.UUID) -> None:
    ctx = RequestContext(tenant_id=str(tenant))
    with pytest.raises(QuotaExceeded) as refused, client.guard(ctx, cost=10**12):
        pass
    assert refused.value.status == 429  # audit_block records it as "denied"
