"""The asyncio service runs the same flows: spot-check it on both backends, and against the sync service."""

from __future__ import annotations

import uuid

import pytest

from llmproxy.auth import ApiKeyRevoked, ApiKeyService, AsyncApiKeyService, InvalidApiKey
from llmproxy.core import ManualClock
from llmproxy.core.testing.plugin import Backend


async def test_async_created_key_verifies(akeys: AsyncApiKeyService, tenant_id: uuid.UUID) -> None:
    created = await akeys.create(tenant_id, "k", scopes=("api:access",))

    principal = await akeys.verify(created.secret)

    assert (principal.tenant_id, principal.api_key_id) == (str(tenant_id), str(created.key.id))
    assert [k.id for k in await akeys.list(tenant_id)] == [created.key.id]
    assert (await akeys.get(created.key.id)).name == "k"


async def test_async_unknown_key_is_rejected(akeys: AsyncApiKeyService) -> None:
    with pytest.raises(InvalidApiKey):
        await akeys.verify("sk-llmp-" + "Z" * 43)


async def test_async_revocation_reaches_a_sync_service_sharing_the_backend(
    akeys: AsyncApiKeyService, tenant_id: uuid.UUID, backend: Backend, manual_clock: ManualClock
) -> None:
    created = await akeys.create(tenant_id, "k")
    sync_view = ApiKeyService.from_urls(backend.redis_url, backend.database_url, clock=manual_clock)
    try:
        sync_view.verify(created.secret)

        await akeys.revoke(created.key.id)
        manual_clock.advance(0.5)

        with pytest.raises(ApiKeyRevoked):
            sync_view.verify(created.secret)
    finally:
        sync_view.close()


async def test_async_revoke_tenant_reaches_a_sync_service_sharing_the_backend(
    akeys: AsyncApiKeyService, tenant_id: uuid.UUID, backend: Backend, manual_clock: ManualClock
) -> None:
    created = await akeys.create(tenant_id, "k")
    sync_view = ApiKeyService.from_urls(backend.redis_url, backend.database_url, clock=manual_clock)
    try:
        sync_view.verify(created.secret)

        assert await akeys.revoke_tenant(tenant_id) == 1
        manual_clock.advance(0.5)

        with pytest.raises(ApiKeyRevoked):
            sync_view.verify(created.secret)
        with pytest.raises(ApiKeyRevoked):
            await akeys.verify(created.secret)
        assert await akeys.revoke_tenant(tenant_id) == 0
    finally:
        sync_view.close()
