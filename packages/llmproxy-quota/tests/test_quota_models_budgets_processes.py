"""Model limits and a spend budget under concurrent load from several real processes, on a real Redis."""

from __future__ import annotations

import multiprocessing
import runpy
import uuid
from pathlib import Path
from typing import Any

import pytest

from llmproxy.core import ManualClock, redis_from_url
from llmproxy.quota import QuotaClient, StaticLimits, StaticPrices
from llmproxy.ratelimit_config import DEFAULTS, Budget, Budgets

WORKER = str(Path(__file__).with_name("quota_budget_worker.py"))
START = 1_775_000_000.0


def run(processes: int, **shared: Any) -> list[Any]:
    spawn = multiprocessing.get_context("spawn")
    shared.update(barrier=spawn.Barrier(processes), results=spawn.Queue(), start=START)
    started = [spawn.Process(target=runpy.run_path, args=(WORKER, shared)) for _ in range(processes)]
    for p in started:
        p.start()
    results = [shared["results"].get(timeout=180) for _ in started]
    for p in started:
        p.join(timeout=30)
    assert [p.exitcode for p in started] == [0] * processes
    return results


@pytest.mark.slow
def test_each_model_limit_holds_exactly_under_four_processes(real_redis_url: str) -> None:
    results = run(4, mode="models", redis_url=real_redis_url, tenant=str(uuid.uuid4()))
    # 4 processes x 4 threads x 40 attempts per model
    assert sum(r["gpt-4o"] for r in results) == 37
    assert sum(r["gpt-4o-mini"] for r in results) == 91


@pytest.mark.slow
def test_a_budget_under_fifty_concurrent_streams_from_two_processes(real_redis_url: str) -> None:
    """The overrun is at most what the admitted requests' estimates fell short of their real cost, the
    spend counted is exactly their real cost, and the overrun is carried into the next period as debt."""
    tenant = str(uuid.uuid4())
    limit = 200_000
    results = [
        r
        for r in run(
            2, mode="streams", redis_url=real_redis_url, tenant=tenant, limit=limit, seed=uuid.uuid4().int
        )
    ]
    admitted = [pair for r in results for pair in r["admitted"]]
    refused = sum(r["refused"] for r in results)
    assert refused > 0  # the budget did bind: 150 requests asked for more than it holds
    spent = sum(actual for _, actual in admitted)
    shortfall = sum(max(0, actual - estimated) for estimated, actual in admitted)
    clock = ManualClock(START)
    config = DEFAULTS.for_tenant(uuid.UUID(tenant)).model_copy(
        update={"budgets": Budgets(day=Budget(limit_micros=limit))}
    )
    client = QuotaClient(
        redis_from_url(real_redis_url),
        StaticLimits({uuid.UUID(tenant): config}),
        clock=clock,
        prices=StaticPrices({}),
    )
    (budget,) = client.spend(tenant)
    assert budget.usage == spent  # every admitted request charged exactly its real cost
    overrun = max(0, budget.usage - limit)
    assert overrun <= shortfall  # computed from the requests, not guessed
    clock.advance(86400)
    (next_day,) = client.spend(tenant)
    assert next_day.usage == overrun  # carried as debt
    client.close()
