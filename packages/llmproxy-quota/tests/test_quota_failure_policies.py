"""Redis really cut (TCP proxy) mid-load: each failure policy does what it says; nothing reaches the app."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from llmproxy.core import (
    ManualClock,
    RequestContext,
    Scope,
    async_redis_from_url,
    bind_context_to_scope,
    redis_from_url,
)
from llmproxy.core.testing import Backend
from llmproxy.quota import AsyncQuotaClient, QuotaClient, QuotaMiddleware, QuotaUnavailable, StaticLimits
from llmproxy.ratelimit_config import DEFAULTS, GlobalLimit

FAST_FAIL: dict[str, Any] = {"retry": Retry(NoBackoff(), 0), "socket_timeout": 2, "socket_connect_timeout": 2}
#: (an asyncio client takes the asyncio policy: redis-py 8 converts a sync one, with a warning)
ASYNC_FAST_FAIL: dict[str, Any] = {**FAST_FAIL, "retry": AsyncRetry(NoBackoff(), 0)}


@pytest.fixture
def tenant_limits() -> tuple[uuid.UUID, StaticLimits]:
    tenant = uuid.uuid4()
    config = DEFAULTS.for_tenant(tenant).model_copy(
        update={
            "global_limit": GlobalLimit(
                requests_per_minute=10, requests_per_day=1000, tokens_per_minute=10**6, tokens_per_day=10**7
            )
        }
    )
    return tenant, StaticLimits({tenant: config})


def sync_client(backend: Backend, limits: StaticLimits, clock: ManualClock, **kw: Any) -> QuotaClient:
    return QuotaClient(redis_from_url(backend.redis_url, **FAST_FAIL), limits, clock=clock, **kw)


def test_fail_open_admits_logs_and_counts(
    proxied_backend: Backend, tenant_limits: Any, manual_clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    tenant, limits = tenant_limits
    client = sync_client(proxied_backend, limits, manual_clock)
    ctx = RequestContext(tenant_id=str(tenant))
    assert client.admit(ctx, 10).allowed
    assert proxied_backend.redis_proxy is not None
    proxied_backend.redis_proxy.cut()
    outcomes = [client.admit(ctx, 10) for _ in range(20)]
    assert all(a.allowed and a.degraded for a in outcomes)
    assert client.stats.failed_open == 20
    assert client.stats.redis_failures == 1  # then the breaker skips the dead connection
    assert "Redis unreachable" in caplog.text
    assert not client.settle(outcomes[0].reservation, 5).settled
    with pytest.raises(QuotaUnavailable):
        client.increment(tenant, "tokens_per_day", 1)
    client.close()


def test_fail_closed_rejects_as_unavailable(
    proxied_backend: Backend, tenant_limits: Any, manual_clock: ManualClock
) -> None:
    tenant, limits = tenant_limits
    client = sync_client(proxied_backend, limits, manual_clock, failure_policy="closed")
    assert proxied_backend.redis_proxy is not None
    proxied_backend.redis_proxy.cut()
    admission = client.admit(RequestContext(tenant_id=str(tenant)))
    assert not admission.allowed
    assert admission.unavailable
    assert not client.check(tenant, "requests_per_day", 1).allowed
    client.close()


def test_local_policy_enforces_the_limit_divided_among_processes(
    proxied_backend: Backend, tenant_limits: Any, manual_clock: ManualClock
) -> None:
    tenant, limits = tenant_limits
    client = sync_client(proxied_backend, limits, manual_clock, failure_policy="local", expected_processes=2)
    ctx = RequestContext(tenant_id=str(tenant))
    assert proxied_backend.redis_proxy is not None
    proxied_backend.redis_proxy.cut()
    outcomes = [client.admit(ctx, 10) for _ in range(8)]
    assert [a.allowed for a in outcomes] == [True] * 5 + [False] * 3  # 10 rpm / 2 processes
    assert all(a.degraded for a in outcomes)
    settlement = client.settle(outcomes[0].reservation, 3)
    assert (settlement.settled, settlement.degraded) == (True, True)  # settled by the local limiter
    client.close()


def test_a_settle_redis_cannot_take_under_the_local_policy_says_degraded_not_already_settled(
    proxied_backend: Backend, tenant_limits: Any, manual_clock: ManualClock
) -> None:
    """The local limiter never saw a reservation Redis made: such a settle is not "already settled"."""
    tenant, limits = tenant_limits
    client = sync_client(proxied_backend, limits, manual_clock, failure_policy="local")
    ctx = RequestContext(tenant_id=str(tenant))
    settled_once, held = client.admit(ctx, 10), client.admit(ctx, 10)  # both made by Redis
    assert client.settle(settled_once.reservation, 5).settled
    already = client.settle(settled_once.reservation, 5)
    assert (already.settled, already.degraded) == (False, False)
    assert proxied_backend.redis_proxy is not None
    proxied_backend.redis_proxy.cut()
    unreachable = client.settle(held.reservation, 5)
    assert (unreachable.settled, unreachable.degraded) == (False, True)
    assert client.stats.settle_failures == 1
    client.close()


def test_redis_is_used_again_once_restored(
    proxied_backend: Backend, tenant_limits: Any, manual_clock: ManualClock
) -> None:
    tenant, limits = tenant_limits
    client = sync_client(proxied_backend, limits, manual_clock)
    ctx = RequestContext(tenant_id=str(tenant))
    assert proxied_backend.redis_proxy is not None
    proxied_backend.redis_proxy.cut()
    assert client.admit(ctx).degraded
    proxied_backend.redis_proxy.restore()
    manual_clock.advance(1.0)
    admission = client.admit(ctx)
    assert admission.allowed
    assert not admission.degraded
    client.close()


def with_tenant(app: Any, tenant: uuid.UUID) -> Any:
    """A stand-in for the auth middleware: puts the tenant's RequestContext in the scope."""

    async def wrapped(scope: Scope, receive: Any, send: Any) -> None:
        bind_context_to_scope(scope, RequestContext(tenant_id=str(tenant), endpoint=scope["path"]))
        await app(scope, receive, send)

    return wrapped


async def ok_app(scope: Scope, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize(
    ("policy", "during_cut"),
    [("open", [200] * 12), ("closed", [503] * 12), ("local", [200] * 10 + [429] * 2)],
)
async def test_the_middleware_applies_the_policy_when_redis_is_cut_mid_load(
    proxied_backend: Backend,
    tenant_limits: Any,
    manual_clock: ManualClock,
    policy: str,
    during_cut: list[int],
) -> None:
    tenant, limits = tenant_limits
    client = AsyncQuotaClient(
        async_redis_from_url(proxied_backend.redis_url, **ASYNC_FAST_FAIL),
        limits,
        clock=manual_clock,
        failure_policy=policy,
    )
    app = with_tenant(QuotaMiddleware(ok_app, client=client, estimate_tokens=lambda scope, body: 5), tenant)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        before = [(await http.post("/v1/chat/completions", json={})).status_code for _ in range(5)]
        assert proxied_backend.redis_proxy is not None
        proxied_backend.redis_proxy.cut()
        after = [(await http.post("/v1/chat/completions", json={})).status_code for _ in range(12)]
    assert before == [200] * 5
    assert after == during_cut  # local: a fresh per-process limiter, 10 rpm with 1 expected process
    await client.aclose()


@pytest.mark.parametrize(("policy", "status"), [("open", "200 OK"), ("closed", "503 Service Unavailable")])
def test_the_wsgi_middleware_applies_the_policy_when_redis_is_cut(
    proxied_backend: Backend, tenant_limits: Any, manual_clock: ManualClock, policy: str, status: str
) -> None:
    import io

    from llmproxy.core import bind_context_to_environ
    from llmproxy.quota import QuotaWSGIMiddleware

    tenant, limits = tenant_limits
    client = sync_client(proxied_backend, limits, manual_clock, failure_policy=policy)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"ok"]

    wsgi = QuotaWSGIMiddleware(app, client=client, estimate_tokens=lambda environ, body: 5)
    seen: list[str] = []

    def call() -> None:
        environ: dict[str, Any] = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/chat/completions",
                                   "CONTENT_LENGTH": "2", "wsgi.input": io.BytesIO(b"{}")}  # fmt: skip
        bind_context_to_environ(environ, RequestContext(tenant_id=str(tenant)))
        result = wsgi(environ, lambda s, h, e=None: seen.append(s))
        b"".join(result)
        getattr(result, "close", lambda: None)()

    call()
    assert proxied_backend.redis_proxy is not None
    proxied_backend.redis_proxy.cut()
    for _ in range(3):
        call()
    assert seen == ["200 OK"] + [status] * 3
    client.close()
