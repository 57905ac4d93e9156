"""Storing batches of events with their place in each tenant's chain: the SQL once, over a sync
``Connection``.

One transaction per batch: lock the chain head of every tenant in the batch (an upsert on
``audit_chain_heads``
takes the row lock on both PostgreSQL and SQLite), link the events, insert them with ``ON CONFLICT DO
NOTHING`` on ``(event_time, event_id)``. If some were stored already (a redelivery after a crash between
commit and acknowledgement), the insert is rolled back to a savepoint and redone without them, so a duplicate
never takes a sequence number. Heads move and checkpoints are written in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from ._chain import GENESIS, Checkpoint, CheckpointSigner, event_row, link
from ._models import AuditEvent
from ._partitions import month_of
from ._tables import chain_heads_table as heads
from ._tables import checkpoints_table as checkpoints
from ._tables import events_table as events
from ._uuid7 import ms_to_datetime


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    """Write a signed checkpoint of a tenant's head every ``every_events`` events or ``every_ms``
    milliseconds."""

    signer: CheckpointSigner | None = None
    every_events: int = 1000
    every_ms: int = 60_000


@dataclass(frozen=True, slots=True)
class StoreResult:
    inserted: int
    duplicates: int
    checkpoints: int
    months: frozenset[tuple[int, int]]


def _insert(conn: Connection, table: sa.Table) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def aware(when: datetime) -> datetime:
    """SQLite hands timestamps back naive; they were stored in UTC."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def lock_heads(conn: Connection, tenants: Sequence[uuid.UUID], now_ms: int) -> dict[uuid.UUID, sa.Row[Any]]:
    """The chain heads of ``tenants``, each row locked until the transaction ends (created if new)."""
    stmt = _insert(conn, heads).values(
        [
            {"tenant_id": t, "seq": 0, "hash": GENESIS, "checkpoint_seq": 0, "checkpoint_ms": now_ms}
            for t in sorted(tenants)  # one order everywhere, so two workers cannot deadlock on two tenants
        ]
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[heads.c.tenant_id], set_={"seq": heads.c.seq}
    ).returning(heads.c.tenant_id, heads.c.seq, heads.c.hash, heads.c.checkpoint_seq, heads.c.checkpoint_ms)
    return {row.tenant_id: row for row in conn.execute(stmt)}


def _linked(
    rows: list[dict[str, Any]], locked: dict[uuid.UUID, sa.Row[Any]]
) -> dict[uuid.UUID, tuple[int, bytes]]:
    by_tenant: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for row in rows:
        by_tenant.setdefault(row["tenant_id"], []).append(row)
    return {
        tenant: link(tenant_rows, locked[tenant].seq, bytes(locked[tenant].hash))
        for tenant, tenant_rows in by_tenant.items()
    }


def store_batch(
    conn: Connection, batch: Sequence[AuditEvent], *, now_ms: int, policy: CheckpointPolicy | None = None
) -> StoreResult:
    """Store ``batch`` in the caller's transaction (call inside ``engine.begin()``)."""
    unique: dict[uuid.UUID, AuditEvent] = {}
    for event in batch:
        unique.setdefault(event.event_id, event)
    if not unique:
        return StoreResult(0, len(batch), 0, frozenset())
    recorded_at = ms_to_datetime(now_ms)
    rows = []
    for event in unique.values():
        row = event_row(event)
        row["event_time"] = event.timestamp
        row["recorded_at"] = recorded_at
        rows.append(row)
    locked = lock_heads(conn, list({row["tenant_id"] for row in rows}), now_ms)
    insert = _insert(conn, events)
    insert = insert.on_conflict_do_nothing(index_elements=[events.c.event_time, events.c.event_id]).returning(
        events.c.event_id
    )
    while True:
        new_heads = _linked(rows, locked)
        savepoint = conn.begin_nested()
        stored = set(conn.execute(insert, [_params(row) for row in rows]).scalars())
        if len(stored) == len(rows):
            savepoint.commit()
            break
        # Some were stored by an earlier delivery: their sequence numbers would leave gaps. Redo without them.
        savepoint.rollback()
        rows = [row for row in rows if row["event_id"] in stored]
        if not rows:
            break
    written = _move_heads(conn, new_heads if rows else {}, locked, now_ms, policy)
    return StoreResult(
        len(rows),
        len(batch) - len(rows),
        written,
        frozenset(month_of(row["event_time"]) for row in rows),
    )


_COLUMNS = tuple(c.name for c in events.columns)


def _params(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in _COLUMNS}


def _move_heads(
    conn: Connection,
    new_heads: dict[uuid.UUID, tuple[int, bytes]],
    locked: dict[uuid.UUID, sa.Row[Any]],
    now_ms: int,
    policy: CheckpointPolicy | None,
) -> int:
    if not new_heads:
        return 0
    due: list[Checkpoint] = []
    updates = []
    for tenant, (seq, digest) in new_heads.items():
        old = locked[tenant]
        checkpoint_seq, checkpoint_ms = old.checkpoint_seq, old.checkpoint_ms
        if (
            policy is not None
            and policy.signer is not None
            and (seq - checkpoint_seq >= policy.every_events or now_ms - checkpoint_ms >= policy.every_ms)
        ):
            due.append(policy.signer.sign(Checkpoint(tenant, seq, digest, now_ms)))
            checkpoint_seq, checkpoint_ms = seq, now_ms
        updates.append(
            {"t": tenant, "seq": seq, "hash": digest, "cseq": checkpoint_seq, "cms": checkpoint_ms}
        )
    conn.execute(
        heads.update()
        .where(heads.c.tenant_id == sa.bindparam("t"))
        .values(
            seq=sa.bindparam("seq"),
            hash=sa.bindparam("hash"),
            checkpoint_seq=sa.bindparam("cseq"),
            checkpoint_ms=sa.bindparam("cms"),
        ),
        updates,
    )
    for checkpoint in due:
        save_checkpoint(conn, checkpoint)
    return len(due)


def save_checkpoint(conn: Connection, checkpoint: Checkpoint) -> None:
    conn.execute(
        checkpoints.insert().values(
            tenant_id=checkpoint.tenant_id,
            seq=checkpoint.seq,
            hash=checkpoint.hash,
            created_ms=checkpoint.created_ms,
            kind=checkpoint.kind,
            retained=[[s, h.hex()] for s, h in checkpoint.retained],
            key_id=checkpoint.key_id,
            signature=checkpoint.signature,
        )
    )


def load_checkpoints(conn: Connection, tenant_id: uuid.UUID) -> list[Checkpoint]:
    rows = conn.execute(
        sa.select(checkpoints)
        .where(checkpoints.c.tenant_id == tenant_id)
        .order_by(checkpoints.c.seq, checkpoints.c.id)
    )
    return [
        Checkpoint(
            row.tenant_id,
            row.seq,
            bytes(row.hash),
            row.created_ms,
            row.kind,
            tuple((int(s), bytes.fromhex(h)) for s, h in row.retained),
            row.key_id,
            row.signature,
        )
        for row in rows
    ]


def chain_head(conn: Connection, tenant_id: uuid.UUID) -> tuple[int, bytes] | None:
    row = conn.execute(sa.select(heads.c.seq, heads.c.hash).where(heads.c.tenant_id == tenant_id)).first()
    return None if row is None else (row.seq, bytes(row.hash))


def checkpoint_now(
    conn: Connection, tenant_id: uuid.UUID, signer: CheckpointSigner, now_ms: int
) -> Checkpoint | None:
    """Sign the tenant's current head now (``llmproxy-audit checkpoint``); None for a tenant without
    events."""
    locked = lock_heads(conn, [tenant_id], now_ms)[tenant_id]
    if locked.seq == 0:
        return None
    checkpoint = signer.sign(Checkpoint(tenant_id, locked.seq, bytes(locked.hash), now_ms))
    save_checkpoint(conn, checkpoint)
    conn.execute(
        heads.update()
        .where(heads.c.tenant_id == tenant_id)
        .values(checkpoint_seq=locked.seq, checkpoint_ms=now_ms)
    )
    return checkpoint
