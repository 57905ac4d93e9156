"""Run by test_quota_concurrency in a spawned process (via runpy.run_path): 8 threads hammer admit().

Globals given: redis_url, tenant, start, attempts, barrier, results (a multiprocessing queue).
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from llmproxy.core import ManualClock, RequestContext, redis_from_url
from llmproxy.quota import QuotaClient, StaticLimits
from llmproxy.ratelimit_config import DEFAULTS, ApiKeyLimit, GlobalLimit

g: dict[str, Any] = globals()
tenant_id = uuid.UUID(g["tenant"])
config = DEFAULTS.for_tenant(tenant_id).model_copy(
    update={
        "global_limit": GlobalLimit(
            requests_per_minute=100, requests_per_day=10**6, tokens_per_minute=10**6, tokens_per_day=10**6
        ),
        "api_key_limit": ApiKeyLimit(requests_per_minute=10**6, tokens_per_minute=10**6),
    }
)
client = QuotaClient(
    redis_from_url(g["redis_url"]),
    StaticLimits({tenant_id: config}),
    clock=ManualClock(g["start"]),  # every process sees the same frozen instant: no refill during the test
    deny_cache=False,
)
admitted = [0] * 8
g["barrier"].wait(timeout=60)


def hammer(i: int) -> None:
    ctx = RequestContext(tenant_id=g["tenant"], api_key_id=f"key-{i}", endpoint="/v1/chat/completions")
    for _ in range(g["attempts"]):
        if client.admit(ctx, 10).allowed:
            admitted[i] += 1


threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
g["results"].put(sum(admitted))
client.close()
