"""Runs in a separate (spawned) process: a reader service with its own L1, for the cross-process tests."""

from __future__ import annotations

import time
import uuid
from typing import Any


def read_until_changed(redis_url: str, database_url: str, tenant_id: str, events: Any, results: Any) -> None:
    from llmproxy.ratelimit_config import RateLimitConfigService

    tid = uuid.UUID(tenant_id)
    with RateLimitConfigService.from_urls(redis_url, database_url, l1_ttl=600) as service:
        if not service.start(wait=10.0):
            results.put(("error", "subscriber did not subscribe"))
            return
        before = service.get(tid)
        if service.get_with_source(tid).source != "l1":
            results.put(("error", "second read did not come from L1"))
            return
        results.put(("ready", before.model_dump_json()))
        if not events.wait(30):
            results.put(("error", "the parent never wrote"))
            return
        deadline = time.monotonic() + 1.0  # the promise: other processes drop their L1 within 1 s
        while time.monotonic() < deadline:
            current = service.get(tid)
            if current != before:
                results.put(("changed", current.model_dump_json()))
                return
            time.sleep(0.005)
        results.put(("unchanged", service.get(tid).model_dump_json()))
