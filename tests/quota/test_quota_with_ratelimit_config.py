"""llmproxy-quota enforcing the limits served by llmproxy-ratelimit-config (PostgreSQL/SQLite + Redis)."""

from __future__ import annotations

import uuid

from llmproxy.core import ManualClock, RequestContext, TenantRegistry, create_engine, redis_from_url
from llmproxy.core.testing import Backend
from llmproxy.quota import QuotaClient
from llmproxy.ratelimit_config import (
    ApiKeyLimit,
    EndpointLimit,
    GlobalLimit,
    RateLimitConfigService,
    TenantRateLimitConfiguration,
)

CHAT = "/v1/chat/completions"


def test_quota_enforces_a_tenant_configuration_stored_by_the_config_service(backend: Backend) -> None:
    engine = create_engine(backend.database_url)
    tenant = TenantRegistry(engine).create(f"acme-{uuid.uuid4().hex[:8]}").id
    redis = redis_from_url(backend.redis_url)
    service = RateLimitConfigService(redis, engine, subscribe=False)
    service.upsert(
        TenantRateLimitConfiguration(
            tenant_id=tenant,
            global_limit=GlobalLimit(
                requests_per_minute=100, requests_per_day=1000, tokens_per_minute=10**5, tokens_per_day=10**6
            ),
            api_key_limit=ApiKeyLimit(requests_per_minute=100, tokens_per_minute=10**5),
            endpoint_limits={
                CHAT: EndpointLimit(requests_per_minute=3, tokens_per_minute=10**5, burst_capacity=3)
            },
        )
    )
    client = QuotaClient(redis, service, clock=ManualClock())
    ctx = RequestContext(tenant_id=str(tenant), endpoint=CHAT)
    outcomes = [client.admit(ctx, 10) for _ in range(4)]
    assert [a.allowed for a in outcomes] == [True, True, True, False]
    assert outcomes[-1].rejected[0].name == "endpoint.requests_per_minute"
    assert client.check(tenant, "requests_per_day", 0).limit == 1000
    service.close()
    redis.close()
    engine.dispose()


def test_an_unconfigured_tenant_gets_the_configured_defaults(backend: Backend) -> None:
    engine = create_engine(backend.database_url)
    tenant = TenantRegistry(engine).create(f"new-{uuid.uuid4().hex[:8]}").id
    redis = redis_from_url(backend.redis_url)
    service = RateLimitConfigService(redis, engine, subscribe=False)
    client = QuotaClient(redis, service, clock=ManualClock())
    admission = client.admit(RequestContext(tenant_id=str(tenant), api_key_id="k"), 1)
    assert admission.allowed
    by_name = {r.name: r.limit for r in admission.results}
    assert by_name["api_key.requests_per_minute"] == service.defaults.api_key_limit.requests_per_minute
    service.close()
    redis.close()
    engine.dispose()
