"""8 processes x 8 threads against one limit of 100 requests/min on a real redis-server admit exactly 100."""

from __future__ import annotations

import multiprocessing
import runpy
import struct
import uuid
from pathlib import Path

import pytest

from llmproxy.core import redis_from_url

WORKER = str(Path(__file__).with_name("quota_load_worker.py"))


@pytest.mark.slow
def test_eight_processes_of_eight_threads_admit_exactly_the_limit(real_redis_url: str) -> None:
    spawn = multiprocessing.get_context("spawn")
    tenant = str(uuid.uuid4())
    barrier = spawn.Barrier(8)
    results = spawn.Queue()
    shared = {
        "redis_url": real_redis_url, "tenant": tenant, "start": 1_775_000_000.0, "attempts": 20,
        "barrier": barrier, "results": results,
    }  # fmt: skip
    processes = [spawn.Process(target=runpy.run_path, args=(WORKER, shared)) for _ in range(8)]
    for p in processes:
        p.start()
    counts = [results.get(timeout=120) for _ in processes]
    for p in processes:
        p.join(timeout=30)
    assert [p.exitcode for p in processes] == [0] * 8
    assert sum(counts) == 100  # 1280 attempts, exactly the limit admitted
    usage = redis_from_url(real_redis_url).hget(f"llmproxy:{{{tenant}}}:quota", "budget:requests:day")
    assert usage is not None
    assert struct.unpack(">qq", usage)[1] == 100  # and exactly the admitted requests were counted
