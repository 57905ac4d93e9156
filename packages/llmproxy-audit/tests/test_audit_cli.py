"""The ``llmproxy-audit`` command: verify reports the first broken link and exits 1; migrations have their own
version table and downgrade cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import sqlalchemy as sa

from llmproxy.audit import AuditEvent, events_table, store_batch
from llmproxy.audit._partitions import create_partitions, month_of
from llmproxy.core import create_engine, current_revisions, downgrade, upgrade

from .conftest import CHECKPOINT_KEY

CLI = Path(sys.executable).with_name("llmproxy-audit")


def run(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LLMPROXY_DATABASE_URL": database_url,
        "LLMPROXY_AUDIT_CHECKPOINT_KEY": CHECKPOINT_KEY,
    }
    return subprocess.run([str(CLI), *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def seed(database_url: str, tenant: uuid.UUID, count: int = 5) -> None:
    batch = [AuditEvent(action="a.b", entity_type="t", tenant_id=tenant) for _ in range(count)]
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            create_partitions(conn, {month_of(batch[0].timestamp)})
        with engine.begin() as conn:
            store_batch(conn, batch, now_ms=0)
    finally:
        engine.dispose()


def test_verify_exits_0_for_an_intact_chain(database_url: str, tenant: uuid.UUID) -> None:
    seed(database_url, tenant)
    result = run(database_url, "verify", "--tenant", str(tenant))
    assert result.returncode == 0, result.stderr
    assert "chain intact, 5 events" in result.stdout


def test_verify_exits_1_naming_the_first_broken_link(database_url: str, tenant: uuid.UUID) -> None:
    seed(database_url, tenant)
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(events_table.update().where(events_table.c.seq == 3).values(entity_id="changed"))
    engine.dispose()
    result = run(database_url, "verify", "--all")
    assert result.returncode == 1
    assert "BROKEN at seq 3" in result.stdout


def test_checkpoint_signs_the_current_head(database_url: str, tenant: uuid.UUID) -> None:
    seed(database_url, tenant, 4)
    result = run(database_url, "checkpoint", "--tenant", str(tenant))
    assert result.returncode == 0, result.stderr
    assert "checkpoint at seq 4" in result.stdout


def test_audit_migrations_keep_their_own_version_table_and_downgrade(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    assert current_revisions(empty_database_url)["audit"] == "audit_0001"
    downgrade(empty_database_url, "audit")
    assert current_revisions(empty_database_url)["audit"] is None
    engine = create_engine(empty_database_url)
    try:
        tables = sa.inspect(engine).get_table_names(
            schema=None if engine.dialect.name == "sqlite" else "audit"
        )
        assert "audit_events" not in tables
    finally:
        engine.dispose()
    upgrade(empty_database_url)
    assert current_revisions(empty_database_url)["audit"] == "audit_0001"
