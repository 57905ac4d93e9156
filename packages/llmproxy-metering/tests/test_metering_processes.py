"""Real processes and real outages: concurrent flushers, a flusher killed mid-flush, PostgreSQL cut."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from llmproxy.core import ManualClock, create_engine, redis_from_url
from llmproxy.core.testing import Backend
from llmproxy.metering import Flusher, MeteringClient, UsageEvent, retry_delay, usage_hourly_table

WORKER = Path(__file__).with_name("metering_worker.py")
pytestmark = pytest.mark.slow


def fill(backend: Backend, clock: ManualClock, tenants: list[uuid.UUID], hours: int) -> int:
    """Record one event per tenant and hour; the total input tokens recorded."""
    client = MeteringClient(
        redis_from_url(backend.redis_url),
        clock=clock,
        late_window=(hours + 1) * 3600,
        dedupe_window=(hours + 1) * 3600,
    )
    now = datetime.fromtimestamp(clock.now(), UTC)
    total = 0
    for tenant in tenants:
        for h in range(hours):
            client.record(
                UsageEvent(
                    tenant_id=tenant, occurred_at=now - timedelta(hours=h), model="m", input_tokens=h + 7
                )
            )
            total += h + 7
    client.flush()
    assert client.write_behind.stats.dropped == 0
    return total


def totals(database_url: str) -> tuple[int, int, int]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            t = usage_hourly_table
            row = conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.coalesce(sa.func.sum(t.c.requests), 0),
                    sa.func.coalesce(sa.func.sum(t.c.input_tokens), 0),
                )
            ).one()
    finally:
        engine.dispose()
    return int(row[0]), int(row[1]), int(row[2])


def flusher_process(backend: Backend, *args: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LLMPROXY_REDIS_URL": backend.redis_url,
        "LLMPROXY_DATABASE_URL": backend.database_url,
    }
    return subprocess.Popen(
        [sys.executable, str(WORKER), "flush", "--once", "--log-level", "WARNING", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_two_concurrent_flusher_processes_store_exactly_the_recorded_totals(
    real_backend: Backend, clock: ManualClock, create_tenant: Callable[[str], uuid.UUID]
) -> None:
    tenants = [create_tenant(real_backend.database_url) for _ in range(20)]
    expected = fill(real_backend, clock, tenants, 100)
    procs = [flusher_process(real_backend) for _ in range(2)]
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    assert totals(real_backend.database_url) == (2000, 2000, expected)


def test_a_flusher_killed_mid_flush_then_rerun_stores_exact_totals(
    real_backend: Backend, clock: ManualClock, create_tenant: Callable[[str], uuid.UUID]
) -> None:
    tenants = [create_tenant(real_backend.database_url) for _ in range(50)]
    expected = fill(real_backend, clock, tenants, 100)
    env_chunk = ["--name", "default"]
    proc = flusher_process(real_backend, *env_chunk)
    # Kill it once some rows, but not all, are written (chunks of 1000 rows commit one by one).
    deadline = time.monotonic() + 60
    seen = 0
    while time.monotonic() < deadline and proc.poll() is None:
        seen = totals(real_backend.database_url)[0]
        if seen > 0:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = totals(real_backend.database_url)[0]
    if proc.returncode != -signal.SIGKILL or partial >= 5000:
        pytest.skip(f"the flusher finished before it could be killed ({partial} rows)")
    rerun = flusher_process(real_backend)
    _out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err.decode()
    assert totals(real_backend.database_url) == (5000, 5000, expected)


def test_postgresql_cut_during_a_flush_loses_nothing_after_recovery(
    proxied_backend: Backend,
    real_backend: Backend,
    clock: ManualClock,
    create_tenant: Callable[[str], uuid.UUID],
) -> None:
    assert proxied_backend.database_proxy is not None
    direct_db = real_backend.database_url  # the same database, not through the proxy
    tenants = [create_tenant(direct_db) for _ in range(50)]
    expected = fill(proxied_backend, clock, tenants, 100)
    engine = create_engine(proxied_backend.database_url)
    flusher = Flusher(redis_from_url(proxied_backend.redis_url), engine, chunk_size=100)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            flusher.run_once()
        except Exception as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and totals(direct_db)[0] == 0 and thread.is_alive():
        time.sleep(0.002)
    proxied_backend.database_proxy.cut()
    thread.join(60)
    written_during_cut = totals(direct_db)[0]
    proxied_backend.database_proxy.restore()
    if not failure:
        pytest.skip(f"the flush finished before the cut ({written_during_cut} rows)")
    assert written_during_cut < 5000
    flusher.run_once()
    assert totals(direct_db) == (5000, 5000, expected)
    engine.dispose()


def test_after_postgresql_returns_the_flush_loop_catches_up_within_an_interval(
    proxied_backend: Backend,
    real_backend: Backend,
    clock: ManualClock,
    create_tenant: Callable[[str], uuid.UUID],
) -> None:
    assert proxied_backend.database_proxy is not None
    tenant = create_tenant(proxied_backend.database_url)
    engine = create_engine(proxied_backend.database_url, connect_args={"connect_timeout": 1})
    flusher = Flusher(redis_from_url(proxied_backend.redis_url), engine, flush_interval=1.0)
    proxied_backend.database_proxy.cut()
    flusher.start()
    try:
        fill(proxied_backend, clock, [tenant], 3)
        time.sleep(3)  # a few failed runs: the backoff grows to its cap, the interval
        proxied_backend.database_proxy.restore()
        restored = time.monotonic()
        while totals(real_backend.database_url)[0] < 3 and time.monotonic() - restored < 10:
            time.sleep(0.05)
        lag = time.monotonic() - restored
    finally:
        flusher.stop()
        engine.dispose()
    assert totals(real_backend.database_url)[0] == 3
    # interval + 1 s is the bound; the rest is slack for a loaded test machine
    assert lag <= 1.0 + 1.0 + 2.0, lag


def test_the_retry_delay_doubles_and_never_exceeds_the_interval() -> None:
    delays = [retry_delay(n, 60.0) for n in range(1, 12)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(delays) == 60.0
    assert retry_delay(50, 2.0) == 2.0


def test_the_flush_cli_refuses_an_interval_the_ttl_cannot_cover(real_backend: Backend) -> None:
    proc = flusher_process(real_backend, "--interval", "400000")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert b"flush_interval" in err


def test_the_flush_cli_prints_what_one_run_wrote(
    real_backend: Backend, clock: ManualClock, create_tenant: Callable[[str], uuid.UUID]
) -> None:
    tenant = create_tenant(real_backend.database_url)
    fill(real_backend, clock, [tenant], 4)
    proc = flusher_process(real_backend)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    import json

    printed = json.loads(out)
    assert (printed["buckets"], printed["rows"], printed["tenants"]) == (4, 4, 1)
