"""Chain verification and retention: the first broken link of a tenant's chain, and dropping old months.

Verification walks the tenant's rows in sequence order from genesis, or from the latest retention checkpoint
when old months were dropped (or from the latest checkpoint when asked), recomputing every hash. It reports
the first problem: a row whose fields no longer give its hash (edited), a missing sequence number (deleted), a
row whose ``prev_hash`` is not its predecessor's hash (reordered or replaced), a checkpoint that does not
match, a checkpoint whose signature is wrong, or a chain head ahead of the last row (rows at the end deleted).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ._chain import GENESIS, Checkpoint, CheckpointSigner, event_hash
from ._partitions import Month, drop_partitions_before, is_postgres, month_start
from ._store import aware, chain_head, load_checkpoints, save_checkpoint
from ._tables import events_table as events
from ._uuid7 import datetime_to_ms


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """``ok``, how many rows were checked, where the walk started, and the first broken link if any."""

    tenant_id: uuid.UUID
    ok: bool
    checked: int
    started_at_seq: int
    last_seq: int
    problem: str | None = None
    seq: int | None = None
    event_id: uuid.UUID | None = None

    def describe(self) -> str:
        start = "genesis" if self.started_at_seq == 0 else f"checkpoint at seq {self.started_at_seq}"
        if self.ok:
            return f"tenant {self.tenant_id}: chain intact, {self.checked} events checked from {start}"
        where = f" at seq {self.seq}" + (f" (event {self.event_id})" if self.event_id else "")
        return f"tenant {self.tenant_id}: BROKEN{where}: {self.problem} ({self.checked} checked from {start})"


def row_document(row: Any) -> dict[str, Any]:
    doc = dict(row._mapping)
    doc["event_ms"] = datetime_to_ms(aware(row.event_time))
    return doc


def verify_chain(
    conn: Connection,
    tenant_id: uuid.UUID,
    *,
    signer: CheckpointSigner | None = None,
    from_latest_checkpoint: bool = False,
) -> VerifyReport:
    """Verify ``tenant_id``'s chain (module docstring); without ``signer``, signatures go unchecked."""
    marks = load_checkpoints(conn, tenant_id)
    for mark in marks:
        if signer is not None and not signer.verify(mark):
            problem = f"the {mark.kind} checkpoint at seq {mark.seq} has a bad signature"
            return VerifyReport(tenant_id, False, 0, 0, 0, problem, mark.seq)
    start: Checkpoint | None = None
    retention = [m for m in marks if m.kind == "retention"]
    if retention:
        start = retention[-1]
    if from_latest_checkpoint and marks and (start is None or marks[-1].seq > start.seq):
        start = marks[-1]
    start_seq, prev = (start.seq, start.hash) if start else (0, GENESIS)
    expected_at = {m.seq: m.hash for m in marks if m.seq > start_seq}
    checked = 0
    if start is not None and start.retained:
        broken = _check_retained(conn, tenant_id, start)
        if broken:
            return VerifyReport(tenant_id, False, 0, start_seq, start_seq, *broken)
        checked += len(start.retained)
    stmt = (
        sa.select(events)
        .where(events.c.tenant_id == tenant_id, events.c.seq > start_seq)
        .order_by(events.c.seq)
        .execution_options(yield_per=2000)
    )
    seq = start_seq
    for row in conn.execute(stmt):
        if row.seq == seq:
            return VerifyReport(
                tenant_id, False, checked, start_seq, seq, "two rows share this seq", row.seq, row.event_id
            )
        if row.seq != seq + 1:
            missing = f"seq {seq + 1}" if row.seq == seq + 2 else f"seqs {seq + 1}..{row.seq - 1}"
            return VerifyReport(
                tenant_id, False, checked, start_seq, seq, f"{missing} missing (rows deleted)", seq + 1
            )
        stored_prev, stored_hash = bytes(row.prev_hash), bytes(row.hash)
        if event_hash(row_document(row), row.seq, stored_prev) != stored_hash:
            return VerifyReport(
                tenant_id, False, checked, start_seq, seq,
                "the row's fields do not give its hash (edited, or moved to another seq)",
                row.seq, row.event_id,
            )  # fmt: skip
        if stored_prev != prev:
            return VerifyReport(
                tenant_id, False, checked, start_seq, seq,
                f"the row does not follow seq {seq} (reordered, replaced, or its predecessor edited)",
                row.seq, row.event_id,
            )  # fmt: skip
        signed = expected_at.get(row.seq)
        if signed is not None and signed != stored_hash:
            return VerifyReport(
                tenant_id, False, checked, start_seq, seq,
                "a signed checkpoint has another hash here: the chain was rewritten", row.seq, row.event_id,
            )  # fmt: skip
        seq, prev = row.seq, stored_hash
        checked += 1
    head = chain_head(conn, tenant_id)
    if head is not None and head[0] > seq:
        return VerifyReport(
            tenant_id, False, checked, start_seq, seq,
            f"the chain head is at seq {head[0]} but the last row is seq {seq} (rows at the end deleted)",
            seq + 1,
        )  # fmt: skip
    if head is not None and head[0] == seq and seq > start_seq and head[1] != prev:
        return VerifyReport(tenant_id, False, checked, start_seq, seq, "the chain head's hash differs", seq)
    return VerifyReport(tenant_id, True, checked, start_seq, seq)


def _check_retained(
    conn: Connection, tenant_id: uuid.UUID, mark: Checkpoint
) -> tuple[str, int, uuid.UUID | None] | None:
    wanted = dict(mark.retained)
    rows = conn.execute(
        sa.select(events).where(events.c.tenant_id == tenant_id, events.c.seq.in_(list(wanted)))
    ).all()
    found = {row.seq: row for row in rows}
    for seq, digest in sorted(wanted.items()):
        row = found.get(seq)
        if row is None:
            return "a row kept by retention is missing (deleted)", seq, None
        if (
            bytes(row.hash) != digest
            or event_hash(row_document(row), row.seq, bytes(row.prev_hash)) != digest
        ):
            return "a row kept by retention was edited", seq, row.event_id
    return None


def tenants_with_events(conn: Connection) -> list[uuid.UUID]:
    from ._tables import chain_heads_table as heads

    return list(conn.execute(sa.select(heads.c.tenant_id).order_by(heads.c.tenant_id)).scalars())


def apply_retention(
    conn: Connection, cutoff: Month, signer: CheckpointSigner, now_ms: int
) -> list[Checkpoint]:
    """Remove events older than month ``cutoff`` (partitions dropped on PostgreSQL, rows deleted on SQLite).

    First, per tenant losing rows, a signed retention checkpoint: the highest dropped seq and its hash, and
    the ``(seq, hash)`` of kept rows below it — so verification can start there. One transaction; on
    PostgreSQL the parent table is locked so no late event slips into a month while it is being dropped.
    """
    before: datetime = month_start(cutoff)
    if is_postgres(conn):
        conn.execute(sa.text("LOCK TABLE audit.audit_events IN SHARE ROW EXCLUSIVE MODE"))
    old = events.c.event_time < before
    tops = conn.execute(
        sa.select(events.c.tenant_id, sa.func.max(events.c.seq)).where(old).group_by(events.c.tenant_id)
    ).all()
    written = []
    for tenant_id, top in tops:
        top_hash = conn.execute(
            sa.select(events.c.hash).where(events.c.tenant_id == tenant_id, events.c.seq == top, old)
        ).scalar_one()
        kept = conn.execute(
            sa.select(events.c.seq, events.c.hash)
            .where(events.c.tenant_id == tenant_id, events.c.seq < top, ~old)
            .order_by(events.c.seq)
        ).all()
        mark = signer.sign(
            Checkpoint(
                tenant_id, top, bytes(top_hash), now_ms, "retention", tuple((s, bytes(h)) for s, h in kept)
            )
        )
        save_checkpoint(conn, mark)
        written.append(mark)
    if is_postgres(conn):
        drop_partitions_before(conn, cutoff)
    else:
        conn.execute(events.delete().where(old))
    return written
