"""Run by test_quota_models_budgets_processes in a spawned process (via runpy.run_path).

Globals given: mode ("models" or "streams"), redis_url, tenant, start, barrier, results (a queue), and for
"streams" the budget's limit and a seed. Every process sees the same frozen instant (no refill, one period).

- ``models``: 4 threads each ask 40 times for gpt-4o and 40 times for gpt-4o-mini; puts the admitted counts.
- ``streams``: 3 waves of 25 concurrent streamed chat requests through ``QuotaMiddleware``, each streaming a
  random number of output tokens (sometimes more than its ``max_tokens``: an estimate can be wrong); puts
  ``(estimated cost, actual cost)`` of every admitted request and the number refused.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import uuid
from typing import Any

from llmproxy.core import (
    ManualClock,
    RequestContext,
    async_redis_from_url,
    bind_context_to_scope,
    redis_from_url,
    report_usage,
)
from llmproxy.quota import (
    AsyncQuotaClient,
    QuotaClient,
    QuotaMiddleware,
    StaticLimits,
    StaticPrices,
    TokenEstimate,
)
from llmproxy.ratelimit_config import DEFAULTS, ApiKeyLimit, Budget, Budgets, GlobalLimit, ModelLimit

g: dict[str, Any] = globals()
tenant_id = uuid.UUID(g["tenant"])
BIG = 10**9
CHAT = "/v1/chat/completions"
PRICES = StaticPrices({"gpt-4o": ("2.5", "10"), "gpt-4o-mini": ("0.15", "0.6")})
base = DEFAULTS.for_tenant(tenant_id).model_copy(
    update={
        "global_limit": GlobalLimit(
            requests_per_minute=BIG, requests_per_day=BIG, tokens_per_minute=BIG, tokens_per_day=BIG
        ),
        "api_key_limit": ApiKeyLimit(requests_per_minute=BIG, tokens_per_minute=BIG),
        "endpoint_limits": {},
    }
)


def run_models() -> None:
    config = base.model_copy(
        update={
            "model_limits": {
                "gpt-4o": ModelLimit(requests_per_minute=37),
                "gpt-4o-mini": ModelLimit(tokens_per_minute=910),  # 91 requests of 10 tokens
            }
        }
    )
    client = QuotaClient(
        redis_from_url(g["redis_url"]), StaticLimits({tenant_id: config}), clock=ManualClock(g["start"])
    )
    admitted = {"gpt-4o": 0, "gpt-4o-mini": 0}
    lock = threading.Lock()
    g["barrier"].wait(timeout=60)

    def hammer(i: int) -> None:
        ctx = RequestContext(tenant_id=tenant_id, api_key_id=f"key-{i}", endpoint=CHAT)
        for _ in range(40):
            for model in ("gpt-4o", "gpt-4o-mini"):
                if client.admit(ctx, TokenEstimate(5, 5, model)).allowed:
                    with lock:
                        admitted[model] += 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    g["results"].put(admitted)
    client.close()


async def run_streams() -> None:
    config = base.model_copy(update={"budgets": Budgets(day=Budget(limit_micros=g["limit"]))})
    client = AsyncQuotaClient(
        async_redis_from_url(g["redis_url"]),
        StaticLimits({tenant_id: config}),
        clock=ManualClock(g["start"]),
        prices=PRICES,
        deny_cache=False,
    )
    rng = random.Random(g["seed"])
    admitted: list[tuple[int, int]] = []

    def estimate(scope: Any, body: bytes) -> TokenEstimate:
        request = json.loads(body)
        return TokenEstimate(100, request["max_tokens"], request["model"])

    async def stream(scope: Any, receive: Any, send: Any) -> None:
        request = json.loads((await receive())["body"])
        output = request["actual"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for streamed in range(0, output + 1, 20):
            report_usage(model=request["model"], input_tokens=100, output_tokens=streamed, final=False)
            await send({"type": "http.response.body", "body": b"data: {}\n\n", "more_body": True})
            await asyncio.sleep(0.001)
        report_usage(model=request["model"], input_tokens=100, output_tokens=output, final=True)
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    app = QuotaMiddleware(stream, client=client, estimate_tokens=estimate)

    async def one() -> None:
        max_tokens = rng.randrange(50, 400)
        actual = rng.randrange(max_tokens // 2, 2 * max_tokens)  # an estimate is sometimes short
        body = json.dumps({"model": "gpt-4o", "max_tokens": max_tokens, "actual": actual}).encode()
        scope: dict[str, Any] = {"type": "http", "method": "POST", "path": CHAT, "headers": []}
        bind_context_to_scope(scope, RequestContext(tenant_id=tenant_id, api_key_id="k", endpoint=CHAT))
        status: list[int] = []
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        if status == [200]:
            estimated = PRICES.token_price(tenant_id, "gpt-4o").tokens_cost_micros(100, max_tokens)  # type: ignore[union-attr]
            spent = PRICES.token_price(tenant_id, "gpt-4o").tokens_cost_micros(100, actual)  # type: ignore[union-attr]
            admitted.append((estimated, spent))
        else:
            assert status == [429], status

    g["barrier"].wait(timeout=60)
    refused_before = 0
    for _ in range(3):
        count = len(admitted)
        await asyncio.gather(*(one() for _ in range(25)))
        refused_before += 25 - (len(admitted) - count)
    await client.aclose()
    g["results"].put({"admitted": admitted, "refused": refused_before})


if g["mode"] == "models":
    run_models()
else:
    asyncio.run(run_streams())
