"""The per-tenant hash chain: stored once, in order, and any later edit, deletion or reordering is found."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from llmproxy.audit import AuditEvent, CheckpointSigner, events_table, store_batch, verify_chain
from llmproxy.audit._chain import GENESIS, event_hash, hash_at, hash_parts, link
from llmproxy.audit._partitions import create_partitions, month_of
from llmproxy.audit._store import CheckpointPolicy, prepare_batch
from llmproxy.core import create_engine

from .conftest import CHECKPOINT_KEY

SIGNER = CheckpointSigner(CHECKPOINT_KEY.encode())
POLICY = CheckpointPolicy(SIGNER, every_events=10, every_ms=10**12)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def events(tenant: uuid.UUID, count: int, **fields: object) -> list[AuditEvent]:
    return [
        AuditEvent(action="thing.update", entity_type="thing", entity_id=str(i), tenant_id=tenant,
                   new_values={"i": i, "f": 0.1 * i, "s": "é"}, **fields)  # type: ignore[arg-type]
        for i in range(count)
    ]  # fmt: skip


def store(engine: Engine, batch: list[AuditEvent]) -> None:
    with engine.begin() as conn:
        create_partitions(conn, {month_of(e.timestamp) for e in batch})
    with engine.begin() as conn:
        store_batch(conn, batch, now_ms=1_700_000_000_000, policy=POLICY)


def verify(engine: Engine, tenant: uuid.UUID, **kwargs: object):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return verify_chain(conn, tenant, signer=SIGNER, **kwargs)  # type: ignore[arg-type]


def execute(engine: Engine, statement: sa.Executable) -> None:
    with engine.begin() as conn:
        conn.execute(statement)


def seqs(engine: Engine, tenant: uuid.UUID) -> list[int]:
    with engine.connect() as conn:
        stmt = (
            sa.select(events_table.c.seq)
            .where(events_table.c.tenant_id == tenant)
            .order_by(events_table.c.seq)
        )
        return list(conn.execute(stmt).scalars())


def test_link_gives_each_row_the_previous_hash() -> None:
    rows = [{"event_id": uuid.uuid4(), "event_ms": 1, "tenant_id": uuid.uuid4(), **dict.fromkeys(
        ("schema_version", "action", "entity_type", "entity_id", "actor_type", "user_id", "api_key_id",
         "outcome", "request_id", "ip_address", "user_agent", "old_values", "new_values", "metadata"))}
        for _ in range(3)]  # fmt: skip
    head = link(rows, 0, GENESIS)
    assert [r["seq"] for r in rows] == [1, 2, 3]
    assert rows[0]["prev_hash"] == GENESIS
    assert rows[1]["prev_hash"] == rows[0]["hash"]
    assert head == (3, rows[2]["hash"])
    assert event_hash(rows[1], 2, rows[0]["hash"]) == rows[1]["hash"]


def test_a_stored_chain_verifies(engine: Engine, tenant: uuid.UUID) -> None:
    store(engine, events(tenant, 30))
    report = verify(engine, tenant)
    assert report.ok, report.describe()
    assert report.checked == 30
    assert report.last_seq == 30


def test_sequence_numbers_are_per_tenant(engine: Engine) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    store(engine, [*events(a, 3), *events(b, 2), *events(a, 2)])
    assert seqs(engine, a) == [1, 2, 3, 4, 5]
    assert seqs(engine, b) == [1, 2]


def test_a_redelivered_batch_is_stored_once_and_takes_no_sequence_number(
    engine: Engine, tenant: uuid.UUID
) -> None:
    batch = events(tenant, 10)
    store(engine, batch[:6])
    with engine.begin() as conn:
        result = store_batch(conn, [*batch[3:], batch[9]], now_ms=1_700_000_000_000, policy=POLICY)
    assert (result.inserted, result.duplicates) == (4, 4)
    assert seqs(engine, tenant) == list(range(1, 11))
    assert verify(engine, tenant).ok


# Floats PostgreSQL's jsonb writes back differently (no exponent, no negative zero), and others for company.
AWKWARD_NUMBERS = [1e16, 1.5e300, -1e22, -0.0, 0.0, 1e-7, 5e-324, 0.1, 2**70, -(2**63), 123456789.12345679]


def test_a_chain_of_awkward_numbers_verifies(engine: Engine, tenant: uuid.UUID) -> None:
    """What is hashed is what the table gives back: 1e16 is stored (and hashed) as the integer jsonb returns,
    -0.0 as 0.0, so verification does not report an intact chain as broken."""
    batch = [
        AuditEvent(action="thing.update", entity_type="thing", tenant_id=tenant, new_values={"v": v},
                   old_values={"list": [v, {"deep": v}]}, metadata={"v": v})
        for v in AWKWARD_NUMBERS
    ]  # fmt: skip
    store(engine, batch)
    report = verify(engine, tenant)
    assert report.ok, report.describe()
    assert report.checked == len(AWKWARD_NUMBERS)
    with engine.connect() as conn:
        stored = (
            conn.execute(
                sa.select(events_table.c.new_values)
                .where(events_table.c.tenant_id == tenant)
                .order_by(events_table.c.seq)
            )
            .scalars()
            .all()
        )
    assert [v["v"] for v in stored] == [
        10**16,
        15 * 10**299,
        -(10**22),
        0.0,
        0.0,
        1e-7,
        5e-324,
        0.1,
        2**70,
        -(2**63),
        123456789.12345679,
    ]


def test_an_edited_row_is_found(engine: Engine, tenant: uuid.UUID) -> None:
    store(engine, events(tenant, 20))
    execute(engine, events_table.update().where(events_table.c.seq == 7).values(new_values={"i": 999}))
    report = verify(engine, tenant)
    assert not report.ok
    assert report.seq == 7
    assert "edited" in (report.problem or "")


def test_a_deleted_row_is_found(engine: Engine, tenant: uuid.UUID) -> None:
    store(engine, events(tenant, 20))
    execute(engine, events_table.delete().where(events_table.c.seq == 12))
    report = verify(engine, tenant)
    assert not report.ok
    assert report.seq == 12
    assert "deleted" in (report.problem or "")


def test_rows_deleted_at_the_end_are_found(engine: Engine, tenant: uuid.UUID) -> None:
    store(engine, events(tenant, 20))
    execute(engine, events_table.delete().where(events_table.c.seq > 17))
    report = verify(engine, tenant)
    assert not report.ok
    assert report.seq == 18
    assert "end deleted" in (report.problem or "")


def test_reordered_rows_are_found(engine: Engine, tenant: uuid.UUID) -> None:
    store(engine, events(tenant, 20))
    swap = sa.case((events_table.c.seq == 5, 6), (events_table.c.seq == 6, 5), else_=events_table.c.seq)
    execute(engine, events_table.update().where(events_table.c.seq.in_([5, 6])).values(seq=swap))
    report = verify(engine, tenant)
    assert not report.ok
    assert report.seq == 5


def test_a_row_moved_with_its_links_recomputed_is_found_by_a_signed_checkpoint(
    engine: Engine, tenant: uuid.UUID
) -> None:
    """Someone who can write the table but lacks the key rewrites one row and recomputes every later hash."""
    batch = events(tenant, 25)
    for i in range(0, 25, 5):
        store(engine, batch[i : i + 5])  # checkpoints at seq 10 and 20
    with engine.begin() as conn:
        query = sa.select(events_table).where(events_table.c.tenant_id == tenant).order_by(events_table.c.seq)
        rows = [dict(r._mapping) for r in conn.execute(query)]
        from llmproxy.audit._verify import row_document

        rows[4]["action"] = "thing.forged"
        prev = rows[3]["hash"]
        for row in rows[4:]:
            doc = row_document(type("R", (), {"_mapping": row, "event_time": row["event_time"]})())
            row["prev_hash"], row["hash"] = prev, event_hash(doc, row["seq"], prev)
            prev = row["hash"]
            conn.execute(
                events_table.update()
                .where(events_table.c.event_id == row["event_id"])
                .values(action=row["action"], prev_hash=row["prev_hash"], hash=row["hash"])
            )
        from llmproxy.audit import chain_heads_table

        conn.execute(
            chain_heads_table.update().where(chain_heads_table.c.tenant_id == tenant).values(hash=prev)
        )
    report = verify(engine, tenant)
    assert not report.ok
    assert report.seq == 10
    assert "checkpoint" in (report.problem or "")


def test_a_checkpoint_with_a_forged_signature_is_found(engine: Engine, tenant: uuid.UUID) -> None:
    from llmproxy.audit import checkpoints_table

    store(engine, events(tenant, 12))
    execute(engine, checkpoints_table.update().values(signature="0" * 64))
    report = verify(engine, tenant)
    assert not report.ok
    assert "signature" in (report.problem or "")


def test_verification_can_start_at_the_latest_checkpoint(engine: Engine, tenant: uuid.UUID) -> None:
    batch = events(tenant, 25)
    for i in range(0, 25, 5):
        store(engine, batch[i : i + 5])  # checkpoints at seq 10 and 20
    execute(engine, events_table.update().where(events_table.c.seq == 3).values(action="edited.before"))
    assert not verify(engine, tenant).ok
    report = verify(engine, tenant, from_latest_checkpoint=True)
    assert report.ok
    assert report.started_at_seq == 20
    assert report.checked == 5


def test_concurrent_writers_of_one_tenant_leave_one_unbroken_chain(engine: Engine, tenant: uuid.UUID) -> None:
    batches = [events(tenant, 20) for _ in range(6)]
    errors: list[BaseException] = []

    def write(batch: list[AuditEvent]) -> None:
        try:
            for i in range(0, 20, 5):
                store(engine, batch[i : i + 5])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert seqs(engine, tenant) == list(range(1, 121))
    assert verify(engine, tenant).ok


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# texts that look like the pieces hash_parts cuts at, wherever a client's values may put them
TRICKY = st.sampled_from([',"prev":"",', ',"seq":0,', '"prev"', '"seq"', "\u2028", "\x00", "é"]) | st.text()


@settings(max_examples=300, deadline=None)
@given(
    metadata=st.dictionaries(st.text(max_size=8) | TRICKY, JSON | TRICKY, max_size=5),
    values=st.none() | st.dictionaries(st.text(max_size=8) | TRICKY, JSON, max_size=4),
    text=st.none() | TRICKY.filter(lambda t: 0 < len(t) <= 200),
    seq=st.integers(min_value=1, max_value=2**62),
    prev=st.binary(min_size=32, max_size=32),
)
def test_the_precomputed_hash_parts_give_the_same_hash_as_the_whole_document(
    metadata: dict[str, object], values: dict[str, object] | None, text: str | None, seq: int, prev: bytes
) -> None:
    """The consumer hashes from ``hash_parts`` made before the chain head is known; verification hashes the
    whole canonical document: the two must agree byte for byte, whatever the values hold."""
    event = AuditEvent(
        action="thing.update", entity_type="thing", entity_id=text, tenant_id=uuid.uuid4(), user_id=text,
        request_id=text, user_agent=text, metadata=metadata, old_values=values, new_values=values,
    )  # type: ignore[arg-type]  # fmt: skip
    row = prepare_batch([event]).rows[0]  # as stored: floats jsonb would not give back are made stable
    assert hash_at(row["parts"], seq, prev) == event_hash(row, seq, prev)
    assert hash_parts(row) == row["parts"]._replace(stable=None)  # the stored row is stable already
