"""Interleavings of a reader's load with a concurrent write, driven step by step through the service's flow.

Each test runs the reader's get-flow one operation at a time (``_perform`` is the service's own I/O), lands
a write at the worst moment, then checks nobody keeps serving the pre-write value.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator
from typing import Any

from llmproxy.core import create_engine, redis_from_url
from llmproxy.ratelimit_config import RateLimitConfigService, TenantRateLimitConfiguration
from llmproxy.ratelimit_config._cache import version_key

ConfigFactory = Callable[..., TenantRateLimitConfiguration]


def step(service: RateLimitConfigService, flow: Generator[Any, Any, Any], result: Any = None) -> Any:
    """Send ``result`` into ``flow`` and perform the operation it asks for next."""
    op = next(flow) if result is None else flow.send(result)
    return service._perform(op)


def finish(flow: Generator[Any, Any, Any], result: Any) -> None:
    try:
        flow.send(result)
    except StopIteration:
        return
    raise AssertionError("the flow asked for more operations than expected")


def services(redis_url: str, database_url: str) -> tuple[RateLimitConfigService, RateLimitConfigService]:
    engine = create_engine(database_url)
    writer = RateLimitConfigService(redis_from_url(redis_url), engine, subscribe=False)
    reader = RateLimitConfigService(redis_from_url(redis_url), engine, subscribe=False)
    return writer, reader


def test_a_write_after_the_version_key_expired_still_refuses_an_older_fill(
    backend: Any, create_tenant: Callable[[str], uuid.UUID], make_config: ConfigFactory
) -> None:
    tenant = create_tenant(backend.database_url)
    writer, reader = services(backend.redis_url, backend.database_url)
    writer.upsert(make_config(tenant, scale=10))
    flow = reader._policy.get_flow(tenant)
    read = step(reader, flow)  # MGET: entry missing, version of the first write
    stored = step(reader, flow, read)  # database: the first write's value
    redis_from_url(backend.redis_url).delete(version_key(tenant))  # the version key expires ...
    writer.upsert(make_config(tenant, scale=2))  # ... and a newer write lands before the fill
    filled = step(reader, flow, stored)
    finish(flow, filled)
    assert not filled, "the fill of a value read before the newer write was accepted"
    fresh = RateLimitConfigService(redis_from_url(backend.redis_url), create_engine(backend.database_url),
                                   subscribe=False)  # fmt: skip
    assert fresh.get(tenant) == make_config(tenant, scale=2)


def test_an_invalidation_during_a_load_keeps_the_loaded_value_out_of_l1(
    backend: Any, create_tenant: Callable[[str], uuid.UUID], make_config: ConfigFactory
) -> None:
    tenant = create_tenant(backend.database_url)
    writer, reader = services(backend.redis_url, backend.database_url)
    writer.upsert(make_config(tenant, scale=10))
    flow = reader._policy.get_flow(tenant)
    read = step(reader, flow)
    stored = step(reader, flow, read)
    filled = step(reader, flow, stored)  # accepted: no write yet
    writer.upsert(make_config(tenant, scale=2))
    reader._policy.on_invalidation(str(tenant))  # the subscriber delivers the write's invalidation now
    finish(flow, filled)  # the load completes after it
    loaded = reader.get_with_source(tenant)
    assert loaded.source != "l1", "the pre-write value went into L1 after its invalidation"
    assert loaded.config == make_config(tenant, scale=2)
