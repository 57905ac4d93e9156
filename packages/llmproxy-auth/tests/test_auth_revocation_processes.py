"""Revocation is seen by another OS process within 1 s (real services; real wall time is the point)."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from pathlib import Path

import pytest

from llmproxy.auth import ApiKeyService
from llmproxy.core import TenantRegistry, create_engine
from llmproxy.core.testing.plugin import Backend


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.parametrize("how", ["revoke", "revoke_tenant"])
def test_revocation_is_seen_by_another_process_within_one_second(
    real_backend: Backend, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # the spawned child imports the worker by name
    from auth_revocation_worker import verify_until_refused

    engine = create_engine(real_backend.database_url)
    tenant = TenantRegistry(engine).create(f"t-{uuid.uuid4().hex[:6]}")
    engine.dispose()
    service = ApiKeyService.from_urls(real_backend.redis_url, real_backend.database_url)
    created = service.create(tenant.id, "k")
    spawn = multiprocessing.get_context("spawn")
    ready, stop, results = spawn.Event(), spawn.Event(), spawn.Queue()
    worker = spawn.Process(
        target=verify_until_refused,
        args=(real_backend.redis_url, real_backend.database_url, created.secret, ready, results, stop),
    )
    worker.start()
    try:
        assert ready.wait(30), "the other process never verified the key"

        revoked_at = time.time()
        if how == "revoke":
            service.revoke(created.key.id)
        else:  # what deleting a tenant does first; then its rows cascade away
            assert service.revoke_tenant(tenant.id) == 1
            engine = create_engine(real_backend.database_url)
            TenantRegistry(engine).delete(tenant.id)
            engine.dispose()

        rejected_at = results.get(timeout=5)
        assert rejected_at - revoked_at <= 1.0
    finally:
        stop.set()
        worker.join(10)
        if worker.is_alive():
            worker.terminate()
        service.close()
