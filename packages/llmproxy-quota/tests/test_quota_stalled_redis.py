"""Redis stalled (a redis-server stopped with SIGSTOP: connections are accepted, nothing answers): a sync
client's every attempt costs what redis-py's own PING costs under the same client options, never twice."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from llmproxy.core import ManualClock, RequestContext, fail_fast_redis_options, redis_from_url
from llmproxy.core.testing import RedisServer, service_unavailable
from llmproxy.quota import QuotaClient, StaticLimits


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own, to stop and continue."""
    if shutil.which("redis-server") is None:
        service_unavailable("redis-server is not installed")
    server = RedisServer().start()
    yield server
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


def seconds(call: Callable[[], Any]) -> float:
    started = time.monotonic()
    try:
        call()
    except redis.exceptions.RedisError:
        pass
    return time.monotonic() - started


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
def test_each_attempt_on_a_stalled_redis_costs_what_redis_pys_ping_costs(
    redis_server: RedisServer, clock: ManualClock
) -> None:
    url = redis_server.url
    options = fail_fast_redis_options(url)  # 0.5 s socket and connect timeouts, one retry
    # retry_redis_after=0: every admit tries Redis (no breaker), so each one shows what an attempt costs
    client = QuotaClient(redis_from_url(url, **options), StaticLimits(), clock=clock, retry_redis_after=0)
    ping = redis.Redis.from_url(url, **options)
    ctx = RequestContext(tenant_id=uuid.uuid4())
    assert not client.admit(ctx, 1).degraded  # the held connection is connected
    assert ping.ping()
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)

    pings = [seconds(ping.ping) for _ in range(2)]
    admissions = []
    attempts = []
    for _ in range(3):
        started = time.monotonic()
        admissions.append(client.admit(ctx, 1))
        attempts.append(time.monotonic() - started)

    assert all(a.allowed and a.degraded for a in admissions)  # the open policy, each time from Redis failing
    assert client.stats.redis_failures == 3
    # before the fix: 1.0 s, then 2.0 s per attempt (the stale check connected the dropped connection just
    # to look, under its own timeouts); redis-py's PING: 1.0 s (two attempts of 0.5 s)
    assert max(attempts[1:]) < 1.5 * statistics.median(pings), (attempts, pings)
    ping.close()
    client.close()
