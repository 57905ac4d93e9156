"""Monthly partitions made ahead by the worker; retention drops old months and the chain stays verifiable."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from llmproxy.audit import AuditEvent, AuditOptions, events_table, store_batch, verify_chain
from llmproxy.audit._consumer import maintain_database
from llmproxy.audit._partitions import create_partitions, existing_partitions, month_of
from llmproxy.audit._store import CheckpointPolicy
from llmproxy.core import ManualClock, create_engine

from .conftest import CHECKPOINT_KEY

OPTIONS = AuditOptions(checkpoint_key=CHECKPOINT_KEY, partitions_ahead=2, retention_months=3)  # type: ignore[arg-type]
SIGNER = OPTIONS.signer()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(real_database_url: str) -> Iterator[Engine]:
    engine = create_engine(real_database_url)
    yield engine
    engine.dispose()


def at(year: int, month: int, day: int = 15) -> datetime:
    return datetime(year, month, day, 12, tzinfo=UTC)


def store(engine: Engine, tenant: uuid.UUID, when: datetime, count: int = 3) -> None:
    batch = [
        AuditEvent(action="x.y", entity_type="thing", tenant_id=tenant, timestamp=when, new_values={"i": i})
        for i in range(count)
    ]
    with engine.begin() as conn:
        create_partitions(conn, {month_of(when)})
    with engine.begin() as conn:
        store_batch(conn, batch, now_ms=int(when.timestamp() * 1000), policy=CheckpointPolicy(SIGNER))


def remaining_months(engine: Engine, tenant: uuid.UUID) -> set[tuple[int, int]]:
    with engine.connect() as conn:
        times = conn.execute(sa.select(events_table.c.event_time).where(events_table.c.tenant_id == tenant))
        return {(t.year, t.month) for t in times.scalars()}


def test_the_worker_creates_this_month_and_the_next_ones(pg_engine: Engine) -> None:
    clock = ManualClock(at(2031, 11).timestamp())
    created, _, _ = maintain_database(pg_engine, OPTIONS.model_copy(update={"retention_months": None}), clock)
    assert created == [(2031, 11), (2031, 12), (2032, 1)]
    with pg_engine.connect() as conn:
        assert {(2031, 11), (2031, 12), (2032, 1)} <= existing_partitions(conn)


def test_creating_partitions_twice_is_harmless(pg_engine: Engine) -> None:
    clock = ManualClock(at(2031, 5).timestamp())
    options = OPTIONS.model_copy(update={"retention_months": None})
    maintain_database(pg_engine, options, clock)
    assert maintain_database(pg_engine, options, clock)[0] == []


def test_retention_drops_old_partitions_and_keeps_the_recent_ones(
    pg_engine: Engine, tenant: uuid.UUID
) -> None:
    for month in (1, 2, 3, 4, 5, 6):
        store(pg_engine, tenant, at(2030, month))
    clock = ManualClock(at(2030, 6).timestamp())
    _, dropped, _ = maintain_database(pg_engine, OPTIONS, clock)
    assert dropped == [(2030, 1), (2030, 2)]
    with pg_engine.connect() as conn:
        left = existing_partitions(conn)
    assert (2030, 2) not in left
    assert (2030, 3) in left
    assert remaining_months(pg_engine, tenant) == {(2030, 3), (2030, 4), (2030, 5), (2030, 6)}


def test_after_retention_the_chain_verifies_from_the_retention_checkpoint(
    engine: Engine, tenant: uuid.UUID
) -> None:
    for month in (1, 2, 3, 4, 5, 6):
        store(engine, tenant, at(2030, month))
    maintain_database(engine, OPTIONS, ManualClock(at(2030, 6).timestamp()))
    with engine.connect() as conn:
        report = verify_chain(conn, tenant, signer=SIGNER)
    assert report.ok, report.describe()
    assert report.started_at_seq == 6
    assert report.checked == 12


def test_a_late_event_kept_below_the_retention_checkpoint_is_still_verified(
    engine: Engine, tenant: uuid.UUID
) -> None:
    store(engine, tenant, at(2030, 3))  # seq 1-3, kept
    store(engine, tenant, at(2030, 1))  # seq 4-6 arrive late into an old month, dropped
    store(engine, tenant, at(2030, 4))  # seq 7-9
    maintain_database(engine, OPTIONS, ManualClock(at(2030, 5).timestamp()))  # cutoff: February
    with engine.connect() as conn:
        assert verify_chain(conn, tenant, signer=SIGNER).ok
    with engine.begin() as conn:
        conn.execute(events_table.update().where(events_table.c.seq == 2).values(action="edited"))
    with engine.connect() as conn:
        report = verify_chain(conn, tenant, signer=SIGNER)
    assert not report.ok
    assert report.seq == 2


def test_retention_without_a_checkpoint_key_is_refused(engine: Engine) -> None:
    options = AuditOptions(retention_months=3)
    with pytest.raises(ValueError, match="checkpoint key"):
        maintain_database(engine, options, ManualClock(at(2030, 6).timestamp()))
