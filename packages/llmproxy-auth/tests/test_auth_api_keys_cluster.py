"""API keys on a local 3-node Redis Cluster: every key is read alone, so no cross-slot command is needed."""

from __future__ import annotations

import pytest

from llmproxy.auth import ApiKeyRevoked, ApiKeyService
from llmproxy.core import ManualClock, TenantRegistry, create_engine


@pytest.mark.real
@pytest.mark.slow
def test_create_verify_revoke_on_a_redis_cluster(
    redis_cluster_url: str, real_database_url: str, manual_clock: ManualClock
) -> None:
    engine = create_engine(real_database_url)
    tenant = TenantRegistry(engine).create("cluster")
    engine.dispose()
    writer = ApiKeyService.from_urls(redis_cluster_url, real_database_url, clock=manual_clock)
    reader = ApiKeyService.from_urls(redis_cluster_url, real_database_url, clock=manual_clock)
    try:
        created = writer.create(tenant.id, "k")
        assert reader.verify(created.secret).tenant_id == str(tenant.id)

        writer.revoke(created.key.id)
        manual_clock.advance(0.5)

        with pytest.raises(ApiKeyRevoked):
            reader.verify(created.secret)
    finally:
        writer.close()
        reader.close()
