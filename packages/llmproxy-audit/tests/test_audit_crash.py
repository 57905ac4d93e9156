"""Consumers killed with SIGKILL mid-batch, again and again, under a steady publish load: every published
event is stored exactly once (real processes, real brokers, real PostgreSQL)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmproxy.audit import verify_chain
from llmproxy.core import create_engine

from .conftest import CHECKPOINT_KEY, Stack
from .helpers import stored_ids, wait_until

CLI = Path(sys.executable).with_name("llmproxy-audit")
PUBLISHER = Path(__file__).with_name("audit_publisher_process.py")


@pytest.fixture(params=["redis", "rabbitmq"])
def crash_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    from .conftest import delete_amqp_topology, unique_options

    options = unique_options(max_deliveries=100, claim_idle=1.0, batch_size=200, poll=0.2)
    database = request.getfixturevalue("real_database_url")
    if request.param == "redis":
        yield Stack("redis", request.getfixturevalue("real_redis_url"), database, options)
        return
    url = request.getfixturevalue("amqp_url")
    yield Stack("rabbitmq", url, database, options)
    delete_amqp_topology(url, options)


def start_consumer(stack: Stack, log: Path) -> subprocess.Popen[bytes]:
    o = stack.options
    env = {
        **os.environ,
        "LLMPROXY_DATABASE_URL": stack.database_url,
        "LLMPROXY_AUDIT_TRANSPORT_URL": stack.transport_url,
        "LLMPROXY_AUDIT_MAX_DELIVERIES": str(o.max_deliveries),
        "LLMPROXY_AUDIT_CLAIM_IDLE": str(o.claim_idle),
        "LLMPROXY_AUDIT_BATCH_SIZE": str(o.batch_size),
        "LLMPROXY_AUDIT_CHECKPOINT_KEY": CHECKPOINT_KEY,
    }
    args = [str(CLI), "consume", "--poll", str(o.poll), "--stream", o.stream,
            "--dead-letter-stream", o.dead_letter_stream, "--amqp-prefix", o.amqp_prefix]  # fmt: skip
    return subprocess.Popen(args, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_consumers_killed_mid_batch_lose_nothing_and_store_nothing_twice(
    crash_stack: Stack, tmp_path: Path
) -> None:
    stack = crash_stack
    tenants = [uuid.uuid4() for _ in range(3)]
    ids_file = tmp_path / "published.txt"
    log = tmp_path / "consumers.log"
    options_json = stack.options.model_dump_json(exclude={"checkpoint_key"})
    publisher = subprocess.Popen(
        [sys.executable, str(PUBLISHER), stack.transport_url, options_json, str(ids_file), "3000", "600",
         ",".join(map(str, tenants))],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    rng = random.Random(14)
    kills = 0
    try:
        while publisher.poll() is None and kills < 6:
            consumer = start_consumer(stack, log)
            wait_until(lambda c=consumer: c.poll() is not None, timeout=rng.uniform(0.8, 1.6))  # type: ignore[misc]
            assert consumer.poll() is None, log.read_text()[-2000:]
            consumer.send_signal(signal.SIGKILL)
            consumer.wait()
            kills += 1
        assert publisher.wait(timeout=60) == 0
        report = json.loads(publisher.stdout.read())  # type: ignore[union-attr]
        published = ids_file.read_text().split()
        assert report["published"] == len(published) == 3000
        final = start_consumer(stack, log)
        try:
            assert wait_until(lambda: len(stored_ids(stack.database_url)) >= len(published), timeout=90), (
                log.read_text()[-3000:]
            )
        finally:
            final.send_signal(signal.SIGTERM)
            final.wait(timeout=30)
    finally:
        if publisher.poll() is None:
            publisher.kill()
    assert kills >= 3
    stored = [str(i) for i in stored_ids(stack.database_url)]
    duplicates = [i for i, n in Counter(stored).items() if n > 1]
    assert duplicates == []
    assert set(stored) == set(published)
    engine = create_engine(stack.database_url)
    try:
        with engine.connect() as conn:
            for tenant in tenants:
                assert verify_chain(conn, tenant).ok
    finally:
        engine.dispose()
