"""Invalidation across processes: two services with separate L1 caches on real Redis and PostgreSQL."""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from llmproxy.core.testing import Backend
from llmproxy.ratelimit_config import DEFAULTS, RateLimitConfigService, TenantRateLimitConfiguration

ConfigFactory = Callable[..., TenantRateLimitConfiguration]
NewTenant = Callable[[str], uuid.UUID]

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("write", ["upsert", "delete"])
def test_a_write_in_one_process_reaches_the_l1_of_another_within_a_second(
    real_backend: Backend,
    create_tenant: NewTenant,
    make_config: ConfigFactory,
    monkeypatch: pytest.MonkeyPatch,
    write: str,
) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # the spawned child imports the worker by name
    import ratelimit_config_worker

    tenant_id = create_tenant(real_backend.database_url)
    config = make_config(tenant_id)
    with RateLimitConfigService.from_urls(real_backend.redis_url, real_backend.database_url) as writer:
        if write == "delete":
            writer.upsert(config)
        expected = DEFAULTS.for_tenant(tenant_id) if write == "delete" else config
        ctx = multiprocessing.get_context("spawn")
        written, results = ctx.Event(), ctx.Queue()
        child = ctx.Process(
            target=ratelimit_config_worker.read_until_changed,
            args=(real_backend.redis_url, real_backend.database_url, str(tenant_id), written, results),
        )
        child.start()
        try:
            status, payload = results.get(timeout=60)
            assert status == "ready", payload
            assert TenantRateLimitConfiguration.model_validate_json(payload) != expected

            writer.upsert(config) if write == "upsert" else writer.delete(tenant_id)
            written.set()

            status, payload = results.get(timeout=60)
        finally:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
        assert status == "changed", payload
        assert TenantRateLimitConfiguration.model_validate_json(payload) == expected
