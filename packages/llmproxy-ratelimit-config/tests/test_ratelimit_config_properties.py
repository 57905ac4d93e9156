"""Properties: any valid configuration (model limits, budgets and key policies included) survives the
repository, the Redis cache and L1 unchanged."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmproxy.core import ManualClock
from llmproxy.core.testing import Backend
from llmproxy.ratelimit_config import (
    MAX_LIMIT,
    MAX_MODEL_LENGTH,
    ApiKeyLimit,
    ApiKeyPolicy,
    Budget,
    Budgets,
    EndpointLimit,
    GlobalLimit,
    ModelLimit,
    RateLimitConfigService,
    TenantRateLimitConfiguration,
)

NewTenant = Callable[[str], uuid.UUID]

limits = st.integers(min_value=0, max_value=MAX_LIMIT)
paths = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
    max_size=499,
).map(lambda rest: "/" + "".join(ch for ch in rest if not ch.isspace()))
endpoint_limits = st.builds(
    EndpointLimit, requests_per_minute=limits, tokens_per_minute=limits, burst_capacity=limits
)
# Model names and key ids: printable, no whitespace (no category C or Z), up to the column's 200 characters.
names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("C", "Z")),
    min_size=1,
    max_size=MAX_MODEL_LENGTH,
).filter(lambda name: not any(ch.isspace() for ch in name))
optional_limits = st.none() | limits
model_limits = st.builds(
    ModelLimit,
    requests_per_minute=optional_limits,
    tokens_per_minute=optional_limits,
    tokens_per_day=optional_limits,
)
budget = st.builds(
    Budget,
    limit_micros=limits,
    soft_threshold_percent=st.integers(min_value=1, max_value=100),
    utc_offset_hours=st.integers(min_value=-12, max_value=14),
)
budgets = st.builds(Budgets, day=st.none() | budget, month=st.none() | budget)
policies = st.builds(
    ApiKeyPolicy, allowed_models=st.none() | st.frozensets(names, max_size=4), budgets=budgets
)


def configurations(tenant_id: uuid.UUID) -> st.SearchStrategy[TenantRateLimitConfiguration]:
    return st.builds(
        TenantRateLimitConfiguration,
        tenant_id=st.just(tenant_id),
        global_limit=st.builds(
            GlobalLimit,
            requests_per_minute=limits,
            requests_per_day=limits,
            tokens_per_minute=limits,
            tokens_per_day=limits,
        ),
        api_key_limit=st.builds(ApiKeyLimit, requests_per_minute=limits, tokens_per_minute=limits),
        endpoint_limits=st.dictionaries(paths, endpoint_limits, max_size=5),
        model_limits=st.dictionaries(names, model_limits, max_size=5),
        budgets=budgets,
        api_keys=st.dictionaries(names, policies, max_size=4),
    )


@pytest.fixture
def service(backend: Backend) -> Iterator[RateLimitConfigService]:
    with RateLimitConfigService.from_urls(
        backend.redis_url, backend.database_url, clock=ManualClock(), subscribe=False
    ) as service:
        yield service


TENANT = uuid.UUID("00000000-0000-4000-8000-000000000001")


@pytest.fixture
def tenant_id(backend: Backend) -> uuid.UUID:
    from llmproxy.core import TenantRegistry, create_engine

    engine = create_engine(backend.database_url)
    TenantRegistry(engine).create("property-tenant", tenant_id=TENANT)
    engine.dispose()
    return TENANT


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=configurations(TENANT))
def test_any_valid_configuration_round_trips_through_repository_redis_and_l1(
    service: RateLimitConfigService, tenant_id: uuid.UUID, config: TenantRateLimitConfiguration
) -> None:
    service.upsert(config)

    assert service.repository.get_by_tenant_id(tenant_id) == config
    from_database = service.get_with_source(tenant_id)
    service.invalidate_local(tenant_id)
    from_redis = service.get_with_source(tenant_id)
    from_l1 = service.get_with_source(tenant_id)
    assert [from_database.source, from_redis.source, from_l1.source] == ["database", "redis", "l1"]
    assert from_database.config == from_redis.config == from_l1.config == config
