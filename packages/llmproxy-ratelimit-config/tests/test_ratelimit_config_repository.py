"""The repository: CRUD and a mapping that loses nothing, sync and async, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pydantic
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from llmproxy.core import AsyncTenantRegistry, TenantNotFound, TenantRegistry
from llmproxy.ratelimit_config import (
    MAX_LIMIT,
    ApiKeyLimit,
    AsyncRateLimitConfigRepository,
    EndpointLimit,
    GlobalLimit,
    RateLimitConfigRepository,
    TenantRateLimitConfiguration,
    configurations_table,
    endpoint_limits_table,
)


def make_config(
    tenant_id: uuid.UUID, scale: int = 1, **endpoints: EndpointLimit
) -> TenantRateLimitConfiguration:
    return TenantRateLimitConfiguration(
        tenant_id=tenant_id,
        global_limit=GlobalLimit(
            requests_per_minute=10 * scale,
            requests_per_day=20 * scale,
            tokens_per_minute=30 * scale,
            tokens_per_day=40 * scale,
        ),
        api_key_limit=ApiKeyLimit(requests_per_minute=5 * scale, tokens_per_minute=6 * scale),
        endpoint_limits={"/" + name.replace("_", "/"): limit for name, limit in endpoints.items()},
    )


def row_counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        configs = conn.execute(sa.select(sa.func.count()).select_from(configurations_table)).scalar_one()
        endpoints = conn.execute(sa.select(sa.func.count()).select_from(endpoint_limits_table)).scalar_one()
    return configs, endpoints


def test_a_tenant_without_a_row_has_no_stored_configuration(engine: Engine, tenant_id: uuid.UUID) -> None:
    assert RateLimitConfigRepository(engine).get_by_tenant_id(tenant_id) is None


def test_upsert_then_get_returns_an_equal_configuration(engine: Engine, tenant_id: uuid.UUID) -> None:
    repo = RateLimitConfigRepository(engine)
    config = make_config(
        tenant_id,
        v1_chat=EndpointLimit(requests_per_minute=1, tokens_per_minute=2, burst_capacity=3),
        v1_embeddings=EndpointLimit(requests_per_minute=4, tokens_per_minute=5, burst_capacity=6),
    )

    assert repo.upsert(config) == config
    assert repo.get_by_tenant_id(tenant_id) == config


def test_limits_up_to_the_64_bit_maximum_survive_the_round_trip(engine: Engine, tenant_id: uuid.UUID) -> None:
    repo = RateLimitConfigRepository(engine)
    big = EndpointLimit(requests_per_minute=MAX_LIMIT, tokens_per_minute=0, burst_capacity=MAX_LIMIT)
    config = make_config(tenant_id, v1_x=big).model_copy(
        update={"global_limit": GlobalLimit(requests_per_minute=MAX_LIMIT, requests_per_day=0,
                                            tokens_per_minute=MAX_LIMIT, tokens_per_day=MAX_LIMIT)}
    )  # fmt: skip

    repo.upsert(config)

    assert repo.get_by_tenant_id(tenant_id) == config


def test_a_path_of_500_characters_is_stored_whole(engine: Engine, tenant_id: uuid.UUID) -> None:
    repo = RateLimitConfigRepository(engine)
    path = "/" + "p" * 499
    limit = EndpointLimit(requests_per_minute=1, tokens_per_minute=1, burst_capacity=1)
    config = make_config(tenant_id).model_copy(update={"endpoint_limits": {path: limit}})

    repo.upsert(config)

    stored = repo.get_by_tenant_id(tenant_id)
    assert stored is not None
    assert list(stored.endpoint_limits) == [path]


def test_upsert_of_an_existing_tenant_updates_it_and_replaces_endpoint_limits_as_a_set(
    engine: Engine, tenant_id: uuid.UUID
) -> None:
    repo = RateLimitConfigRepository(engine)
    limit = EndpointLimit(requests_per_minute=1, tokens_per_minute=2, burst_capacity=3)
    repo.upsert(make_config(tenant_id, v1_a=limit, v1_b=limit))

    updated = make_config(tenant_id, scale=7, v1_b=limit.model_copy(update={"burst_capacity": 9}), v1_c=limit)
    repo.upsert(updated)

    assert repo.get_by_tenant_id(tenant_id) == updated
    assert row_counts(engine) == (1, 2)


def test_upsert_for_an_unknown_tenant_raises_tenant_not_found_and_writes_nothing(engine: Engine) -> None:
    repo = RateLimitConfigRepository(engine)
    before = row_counts(engine)

    with pytest.raises(TenantNotFound):
        repo.upsert(make_config(uuid.uuid4()))

    assert row_counts(engine) == before


def test_delete_removes_the_configuration_and_its_endpoint_limits(
    engine: Engine, tenant_id: uuid.UUID
) -> None:
    repo = RateLimitConfigRepository(engine)
    limit = EndpointLimit(requests_per_minute=1, tokens_per_minute=2, burst_capacity=3)
    repo.upsert(make_config(tenant_id, v1_a=limit))
    before_configs, before_endpoints = row_counts(engine)

    assert repo.delete(tenant_id) is True

    assert repo.get_by_tenant_id(tenant_id) is None
    assert row_counts(engine) == (before_configs - 1, before_endpoints - 1)


def test_delete_of_a_missing_configuration_returns_false(engine: Engine, tenant_id: uuid.UUID) -> None:
    assert RateLimitConfigRepository(engine).delete(tenant_id) is False


def test_deleting_the_tenant_cascades_to_its_configuration(engine: Engine, tenant_id: uuid.UUID) -> None:
    repo = RateLimitConfigRepository(engine)
    limit = EndpointLimit(requests_per_minute=1, tokens_per_minute=2, burst_capacity=3)
    repo.upsert(make_config(tenant_id, v1_a=limit))

    TenantRegistry(engine).delete(tenant_id)

    assert repo.get_by_tenant_id(tenant_id) is None
    assert row_counts(engine) == (0, 0)


def test_list_pages_through_every_configuration_once(engine: Engine) -> None:
    repo = RateLimitConfigRepository(engine)
    registry = TenantRegistry(engine)
    configs = [make_config(registry.create(f"t{i}").id, scale=i + 1) for i in range(5)]
    for config in configs:
        repo.upsert(config)

    pages = [repo.list(limit=2, offset=offset) for offset in (0, 2, 4)]

    assert [len(page) for page in pages] == [2, 2, 1]
    seen = [config for page in pages for config in page]
    assert sorted(seen, key=lambda c: str(c.tenant_id)) == sorted(configs, key=lambda c: str(c.tenant_id))


def test_list_rejects_a_page_size_out_of_range(engine: Engine) -> None:
    with pytest.raises(ValueError, match="limit"):
        RateLimitConfigRepository(engine).list(limit=0)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"global_limit": {"requests_per_minute": -1}}, "requests_per_minute"),
        ({"global_limit": {"tokens_per_day": 2**63}}, "tokens_per_day"),
        ({"api_key_limit": {"tokens_per_minute": "10"}}, "tokens_per_minute"),
        ({"endpoint_limits": {"v1/no-slash": {}}}, "endpoint_limits"),
        ({"endpoint_limits": {"/" + "x" * 500: {}}}, "endpoint_limits"),
        ({"endpoint_limits": {"/v1/chat": {"burst_capacity": -5}}}, "burst_capacity"),
    ],
)
def test_invalid_input_is_rejected_naming_the_field_and_nothing_is_written(
    engine: Engine, tenant_id: uuid.UUID, change: dict[str, dict[str, object]], field: str
) -> None:
    good_endpoint = {"requests_per_minute": 1, "tokens_per_minute": 1, "burst_capacity": 1}
    data: dict[str, object] = make_config(tenant_id).model_dump()
    for section, values in change.items():
        if section == "endpoint_limits":
            data[section] = {path: {**good_endpoint, **v} for path, v in values.items()}  # type: ignore[dict-item]
        else:
            data[section] = {**data[section], **values}  # type: ignore[dict-item]

    with pytest.raises(pydantic.ValidationError, match=field):
        RateLimitConfigRepository(engine).upsert(TenantRateLimitConfiguration.model_validate(data))

    assert row_counts(engine) == (0, 0)


async def test_the_async_repository_reads_and_writes_the_same_rows(
    async_engine: AsyncEngine, engine: Engine
) -> None:
    tenant = await AsyncTenantRegistry(async_engine).create("async-tenant")
    repo = AsyncRateLimitConfigRepository(async_engine)
    limit = EndpointLimit(requests_per_minute=1, tokens_per_minute=2, burst_capacity=3)
    config = make_config(tenant.id, v1_a=limit)

    assert await repo.get_by_tenant_id(tenant.id) is None
    await repo.upsert(config)

    assert await repo.get_by_tenant_id(tenant.id) == config
    assert RateLimitConfigRepository(engine).get_by_tenant_id(tenant.id) == config
    assert await repo.list() == [config]
    assert await repo.delete(tenant.id) is True
    assert await repo.delete(tenant.id) is False


async def test_the_async_repository_raises_tenant_not_found_for_an_unknown_tenant(
    async_engine: AsyncEngine,
) -> None:
    with pytest.raises(TenantNotFound):
        await AsyncRateLimitConfigRepository(async_engine).upsert(make_config(uuid.uuid4()))
