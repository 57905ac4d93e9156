"""Script calls go on a connection the client's write-behind holds (llmproxy.core's held line): the client's
other commands use the pool's other connections, a cut connection is reconnected by the connection's retry
policy, a cancelled call leaves no reply behind, a forked child and a new event loop take a connection of
their own. (The line itself is tested in llmproxy-core's test_core_line.py.)"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.exceptions

from llmproxy.core import ManualClock, RequestContext, async_redis_from_url, redis_from_url
from llmproxy.quota import AsyncQuotaClient, QuotaClient, StaticLimits
from llmproxy.ratelimit_config import EndpointLimit

from .conftest import make_config

CHAT = "/v1/chat/completions"


@pytest.fixture
def admin(real_redis_url: str) -> Iterator[redis.Redis]:
    """A client of its own, to look at (and kill) the quota client's connections."""
    client = redis.Redis.from_url(real_redis_url)
    yield client
    client.close()


@pytest.fixture
def name() -> str:
    """The quota client's connection name (CLIENT LIST tells its connections apart by it)."""
    return f"q-{uuid.uuid4().hex[:8]}"


def named_connections(admin: redis.Redis, name: str) -> list[dict[str, Any]]:
    return [c for c in admin.client_list() if c.get("name") == name]


def kill_connections(admin: redis.Redis, name: str) -> None:
    for conn in named_connections(admin, name):
        admin.client_kill_filter(_id=conn["id"])


def test_admits_go_on_one_held_connection_and_other_commands_on_the_pool(
    real_redis_url: str, admin: redis.Redis, name: str, tenant: uuid.UUID, clock: ManualClock
) -> None:
    client = QuotaClient(redis_from_url(real_redis_url, client_name=name), StaticLimits({}), clock=clock)
    ctx = RequestContext(tenant_id=str(tenant))
    for _ in range(20):
        assert client.admit(ctx, 10).allowed
    client.redis.ping()  # any other command: the pool's connection, not the held one
    conns = named_connections(admin, name)
    assert sorted(c["cmd"] for c in conns) == ["evalsha", "ping"]
    # after close() the pool has it back (and closes it with the client)
    client.close()
    assert named_connections(admin, name) == []


def test_a_killed_connection_is_reconnected_by_the_retry_policy_sync(
    real_redis_url: str, admin: redis.Redis, name: str, tenant: uuid.UUID, clock: ManualClock
) -> None:
    client = QuotaClient(redis_from_url(real_redis_url, client_name=name), StaticLimits({}), clock=clock)
    ctx = RequestContext(tenant_id=str(tenant))
    assert client.admit(ctx, 10).allowed
    kill_connections(admin, name)
    admission = client.admit(ctx, 10)
    assert admission.allowed
    assert not admission.degraded
    assert client.stats.redis_failures == 0
    assert client.check(tenant, "requests_per_day", 0).current_usage == 2
    client.close()


async def test_a_killed_connection_is_reconnected_by_the_retry_policy_async(
    real_redis_url: str, admin: redis.Redis, name: str, tenant: uuid.UUID, clock: ManualClock
) -> None:
    client = AsyncQuotaClient(
        async_redis_from_url(real_redis_url, client_name=name), StaticLimits({}), clock=clock
    )
    ctx = RequestContext(tenant_id=str(tenant))
    assert (await client.admit(ctx, 10)).allowed
    kill_connections(admin, name)
    # the event loop sees the close (redis-py's pool checks a connection the same way, and the same gap
    # remains if a request comes before the loop has seen it)
    await asyncio.sleep(0.05)
    admission = await client.admit(ctx, 10)
    assert admission.allowed
    assert not admission.degraded
    assert client.stats.redis_failures == 0
    assert (await client.check(tenant, "requests_per_day", 0)).current_usage == 2
    await client.aclose()


async def test_a_cancelled_call_leaves_no_reply_for_the_next_one(redis_url: str, clock: ManualClock) -> None:
    """The cancelled call's reply (4 limits) must not be read as the next call's (6 limits)."""
    small, big = uuid.uuid4(), uuid.uuid4()
    endpoints = {CHAT: EndpointLimit(requests_per_minute=100, tokens_per_minute=10_000, burst_capacity=100)}
    limits = StaticLimits({small: make_config(small), big: make_config(big, endpoints=endpoints)})
    client = AsyncQuotaClient(async_redis_from_url(redis_url), limits, clock=clock)
    small_ctx = RequestContext(tenant_id=str(small))
    big_ctx = RequestContext(tenant_id=str(big), endpoint=CHAT)
    assert len((await client.admit(small_ctx, 10)).results) == 4  # the script is loaded, the line taken
    for _ in range(20):
        task = asyncio.ensure_future(client.admit(small_ctx, 10))
        await asyncio.sleep(0)  # sent, waiting for its reply
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        admission = await client.admit(big_ctx, 10)
        assert admission.allowed
        assert [r.name for r in admission.results][-2:] == [
            "endpoint.requests_per_minute",
            "endpoint.tokens_per_minute",
        ]
        assert len(admission.results) == 6
    await client.aclose()


def test_a_forked_child_takes_a_connection_of_its_own(
    real_redis_url: str, tenant: uuid.UUID, clock: ManualClock
) -> None:
    client = QuotaClient(redis_from_url(real_redis_url), StaticLimits({}), clock=clock)
    ctx = RequestContext(tenant_id=str(tenant))
    assert client.admit(ctx, 10).allowed  # the parent holds its connection
    pid = os.fork()
    if pid == 0:  # the child: its admits must not share the parent's socket
        code = 1
        try:
            ok = all(client.admit(ctx, 10).allowed for _ in range(50))
            code = 0 if ok and client.stats.redis_failures == 0 else 1
        finally:
            os._exit(code)
    for _ in range(50):  # meanwhile the parent goes on on its own connection
        assert client.admit(ctx, 10).allowed
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert client.check(tenant, "requests_per_day", 0).current_usage == 101
    client.close()


def test_threads_at_once_share_the_held_connection_and_the_pool(
    redis_url: str, tenant: uuid.UUID, clock: ManualClock
) -> None:
    limits = StaticLimits({tenant: make_config(tenant, rpm=150, rpd=10**6)})
    client = QuotaClient(redis_from_url(redis_url), limits, clock=clock, deny_cache=False)
    ctx = RequestContext(tenant_id=str(tenant))
    allowed: list[bool] = []

    def work() -> None:
        allowed.extend(client.admit(ctx, 0).allowed for _ in range(50))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(allowed) == 400
    assert sum(allowed) == 150
    assert client.check(tenant, "requests_per_day", 0).current_usage == 150
    client.close()


def test_a_new_event_loop_takes_a_new_connection(
    redis_url: str, tenant: uuid.UUID, clock: ManualClock
) -> None:
    client = AsyncQuotaClient(async_redis_from_url(redis_url), StaticLimits({}), clock=clock)
    ctx = RequestContext(tenant_id=str(tenant))

    async def admit() -> bool:
        return (await client.admit(ctx, 10)).allowed and client.stats.redis_failures == 0

    assert asyncio.run(admit())
    assert asyncio.run(admit())  # the first loop is closed: its connection cannot be used here

    async def usage() -> int:
        result = (await client.check(tenant, "requests_per_day", 0)).current_usage
        await client.aclose()
        return result

    assert asyncio.run(usage()) == 2
