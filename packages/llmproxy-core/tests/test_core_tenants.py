"""The tenant registry, sync and async, on both databases."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from llmproxy.core import (
    AsyncTenantRegistry,
    TenantExists,
    TenantNotFound,
    TenantRegistry,
    create_async_engine,
    create_engine,
)


@pytest.fixture
def registry(database_url: str):  # type: ignore[no-untyped-def]
    engine = create_engine(database_url)
    yield TenantRegistry(engine)
    engine.dispose()


def test_created_tenant_can_be_read_back(registry: TenantRegistry) -> None:
    tenant = registry.create("acme")
    assert registry.get(tenant.id) == tenant
    assert registry.list() == [tenant]


def test_duplicate_names_are_rejected(registry: TenantRegistry) -> None:
    registry.create("acme")
    with pytest.raises(TenantExists, match="acme"):
        registry.create("acme")
    assert len(registry.list()) == 1


def test_missing_tenant_raises_not_found(registry: TenantRegistry) -> None:
    missing = uuid.uuid4()
    with pytest.raises(TenantNotFound, match=str(missing)):
        registry.get(missing)
    assert registry.delete(missing) is False


def test_blank_or_overlong_names_are_rejected_and_nothing_is_written(registry: TenantRegistry) -> None:
    for bad in ("   ", "x" * 201):
        with pytest.raises(ValidationError, match="name"):
            registry.create(bad)
    assert registry.list() == []


def test_list_pages_in_creation_order(registry: TenantRegistry) -> None:
    created = [registry.create(f"t{i}") for i in range(5)]
    assert registry.list(limit=2) == created[:2]
    assert registry.list(limit=2, offset=4) == created[4:]
    with pytest.raises(ValueError, match="limit"):
        registry.list(limit=0)


async def test_async_registry_round_trip(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        registry = AsyncTenantRegistry(engine)
        tenant = await registry.create("acme")
        assert await registry.get(tenant.id) == tenant
        assert await registry.list() == [tenant]
        assert await registry.delete(tenant.id) is True
        with pytest.raises(TenantNotFound):
            await registry.get(tenant.id)
    finally:
        await engine.dispose()


def test_exists_tells_a_created_tenant_from_a_missing_one(registry: TenantRegistry) -> None:
    tenant = registry.create("acme")

    assert registry.exists(tenant.id) is True
    assert registry.exists(uuid.uuid4()) is False


async def test_async_registry_tells_whether_a_tenant_exists(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        registry = AsyncTenantRegistry(engine)
        tenant = await registry.create("acme")

        assert await registry.exists(tenant.id) is True
        assert await registry.exists(uuid.uuid4()) is False
    finally:
        await engine.dispose()
