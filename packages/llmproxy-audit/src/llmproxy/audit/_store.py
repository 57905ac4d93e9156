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

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from ._chain import GENESIS, Checkpoint, CheckpointSigner, event_row, hash_parts, link
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


class Head(NamedTuple):
    tenant_id: uuid.UUID
    seq: int
    hash: bytes
    checkpoint_seq: int
    checkpoint_ms: int


def _pg(conn: Connection, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Run ``sql`` on the connection's psycopg cursor, binary parameters (``%b``), in its transaction."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.adapters.register_dumper(_RawJsonb, _raw_jsonb_dumper_class())
        cursor.execute(sql, params)
        rows: list[tuple[Any, ...]] = list(cursor.fetchall()) if cursor.description else []
        return rows
    finally:
        cursor.close()


# PostgreSQL: statements written once as SQL with array parameters, because SQLAlchemy compiling a VALUES list
# of a different length every batch measured ~30 us per event of the consumer's time.
_PG_LOCK_HEADS = (
    "INSERT INTO audit.audit_chain_heads (tenant_id, seq, hash, checkpoint_seq, checkpoint_ms) "
    "SELECT t, 0, %b, 0, %b FROM unnest(%b::uuid[]) AS u(t) "
    "ON CONFLICT (tenant_id) DO UPDATE SET seq = audit_chain_heads.seq "
    "RETURNING tenant_id, seq, hash, checkpoint_seq, checkpoint_ms"
)
_PG_MOVE_HEADS = (
    "UPDATE audit.audit_chain_heads h SET seq = u.seq, hash = u.hash, checkpoint_seq = u.cseq, "
    "checkpoint_ms = u.cms FROM unnest(%b::uuid[], %b::int8[], %b::bytea[], %b::int8[], %b::int8[]) "
    "AS u(t, seq, hash, cseq, cms) WHERE h.tenant_id = u.t"
)


def lock_heads(conn: Connection, tenants: Sequence[uuid.UUID], now_ms: int) -> dict[uuid.UUID, Head]:
    """The chain heads of ``tenants``, each row locked until the transaction ends (created if new)."""
    ordered = sorted(tenants)  # one order everywhere, so two workers cannot deadlock on two tenants
    if conn.dialect.name == "postgresql":
        rows = _pg(conn, _PG_LOCK_HEADS, [GENESIS, now_ms, ordered])
        return {r[0]: Head(r[0], r[1], bytes(r[2]), r[3], r[4]) for r in rows}
    stmt = _insert(conn, heads).values(
        [
            {"tenant_id": t, "seq": 0, "hash": GENESIS, "checkpoint_seq": 0, "checkpoint_ms": now_ms}
            for t in ordered
        ]
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[heads.c.tenant_id], set_={"seq": heads.c.seq}
    ).returning(heads.c.tenant_id, heads.c.seq, heads.c.hash, heads.c.checkpoint_seq, heads.c.checkpoint_ms)
    return {
        r.tenant_id: Head(r.tenant_id, r.seq, bytes(r.hash), r.checkpoint_seq, r.checkpoint_ms)
        for r in conn.execute(stmt)
    }


def _linked(rows: list[dict[str, Any]], locked: dict[uuid.UUID, Head]) -> dict[uuid.UUID, tuple[int, bytes]]:
    by_tenant: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for row in rows:
        by_tenant.setdefault(row["tenant_id"], []).append(row)
    return {
        tenant: link(tenant_rows, locked[tenant].seq, locked[tenant].hash)
        for tenant, tenant_rows in by_tenant.items()
    }


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A batch made ready to store, without the database: its rows (``event_row`` columns, the event time,
    the JSON body when known, and the row's ``hash_parts``), one per distinct event id, and how many
    events were given. Made before the transaction, so the chain heads stay locked only for the linking
    (a concatenation and a SHA-256 per event) and the SQL."""

    rows: tuple[dict[str, Any], ...]
    given: int

    @property
    def months(self) -> set[tuple[int, int]]:
        return {month_of(row["event_time"]) for row in self.rows}


def prepare_batch(batch: Sequence[AuditEvent], bodies: Sequence[bytes] | None = None) -> PreparedBatch:
    """The rows of ``batch`` (see :func:`store_batch` for ``bodies``); raises what hashing an event raises."""
    unique: dict[uuid.UUID, tuple[AuditEvent, bytes | None]] = {}
    for i, event in enumerate(batch):
        unique.setdefault(event.event_id, (event, bodies[i] if bodies is not None else None))
    rows = []
    for event, body in unique.values():
        row = event_row(event)
        row["event_time"] = event.timestamp
        row["body"] = body
        row["parts"] = hash_parts(row)
        rows.append(row)
    return PreparedBatch(tuple(rows), len(batch))


def store_batch(
    conn: Connection,
    batch: Sequence[AuditEvent],
    *,
    now_ms: int,
    policy: CheckpointPolicy | None = None,
    bodies: Sequence[bytes] | None = None,
) -> StoreResult:
    """Store ``batch`` in the caller's transaction (call inside ``engine.begin()``).

    ``bodies``, when given, are the JSON documents the events were decoded from (``bodies[i]`` of
    ``batch[i]``): PostgreSQL then takes the JSON values from them instead of from Python serializing them.
    """
    return store_prepared(conn, prepare_batch(batch, bodies), now_ms=now_ms, policy=policy)


def store_prepared(
    conn: Connection, prepared: PreparedBatch, *, now_ms: int, policy: CheckpointPolicy | None = None
) -> StoreResult:
    """:func:`store_batch` of a batch :func:`prepare_batch` made. ``prepared`` can be stored again after a
    failed attempt (each attempt links the rows afresh)."""
    if not prepared.rows:
        return StoreResult(0, prepared.given, 0, frozenset())
    recorded_at = ms_to_datetime(now_ms)
    rows = list(prepared.rows)
    for row in rows:
        row["recorded_at"] = recorded_at
    locked = lock_heads(conn, list({row["tenant_id"] for row in rows}), now_ms)
    while True:
        new_heads = _linked(rows, locked)
        savepoint = conn.begin_nested()
        stored = _insert_rows(conn, rows)
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
        prepared.given - len(rows),
        written,
        frozenset(month_of(row["event_time"]) for row in rows),
    )


_COLUMNS = tuple(c.name for c in events.columns)
_JSON_COLUMNS = ("old_values", "new_values", "metadata")
_SCALARS = tuple(c for c in _COLUMNS if c not in _JSON_COLUMNS)
_PG_TYPES = {
    "event_time": "timestamptz", "event_id": "uuid", "tenant_id": "uuid", "seq": "int8", "prev_hash": "bytea",
    "hash": "bytea", "schema_version": "int2", "recorded_at": "timestamptz",
    **dict.fromkeys(_JSON_COLUMNS, "text"),
}  # fmt: skip
# One statement whatever the batch size: each column travels as one array parameter (psycopg adapts lists in
# C), where a multi-row VALUES of 1000 rows x 21 columns made psycopg parse 21 000 placeholders per batch.
_ARRAYS = ", ".join("%b::" + _PG_TYPES.get(c, "text") + "[]" for c in _COLUMNS)
_PG_INSERT = (
    f"INSERT INTO audit.audit_events ({', '.join(_COLUMNS)}) "
    f"SELECT {', '.join(c + '::jsonb' if c in _JSON_COLUMNS else c for c in _COLUMNS)} "
    f"FROM unnest({_ARRAYS}) AS u({', '.join(_COLUMNS)}) "
    "ON CONFLICT (event_time, event_id) DO NOTHING RETURNING event_id"
)


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# With the events' own JSON at hand, PostgreSQL parses the three JSON values out of it: no Python serializing.
_PG_INSERT_FROM_BODIES = (
    f"INSERT INTO audit.audit_events ({', '.join((*_SCALARS, *_JSON_COLUMNS))}) "
    f"SELECT {', '.join(_SCALARS)}, nullif(b->'old_values', 'null'), nullif(b->'new_values', 'null'), "
    "coalesce(b->'metadata', '{}') "
    f"FROM unnest({', '.join('%b::' + _PG_TYPES.get(c, 'text') + '[]' for c in _SCALARS)}, %b::jsonb[]) "
    f"AS u({', '.join(_SCALARS)}, b) "
    "ON CONFLICT (event_time, event_id) DO NOTHING RETURNING event_id"
)


def _insert_rows(conn: Connection, rows: list[dict[str, Any]]) -> set[uuid.UUID]:
    """Insert ``rows`` (``ON CONFLICT DO NOTHING``); the ids actually inserted."""
    if conn.dialect.name == "postgresql" and all(row["body"] is not None for row in rows):
        arrays = [[row[c] for row in rows] for c in _SCALARS]
        arrays.append([_RawJsonb(row["body"]) for row in rows])
        return {r[0] for r in _pg(conn, _PG_INSERT_FROM_BODIES, arrays)}
    if conn.dialect.name == "postgresql":
        columns = [
            [_json_text(row[c]) for row in rows] if c in _JSON_COLUMNS else [row[c] for row in rows]
            for c in _COLUMNS
        ]
        return {r[0] for r in _pg(conn, _PG_INSERT, columns)}
    insert = _insert(conn, events)
    insert = insert.on_conflict_do_nothing(index_elements=[events.c.event_time, events.c.event_id]).returning(
        events.c.event_id
    )
    return set(conn.execute(insert, [{name: row[name] for name in _COLUMNS} for row in rows]).scalars())


def _move_heads(
    conn: Connection,
    new_heads: dict[uuid.UUID, tuple[int, bytes]],
    locked: dict[uuid.UUID, Head],
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
    if conn.dialect.name == "postgresql":
        _pg(conn, _PG_MOVE_HEADS, [[u[k] for u in updates] for k in ("t", "seq", "hash", "cseq", "cms")])
    else:
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


class _RawJsonb:
    """Bytes that are JSON already, dumped as such (psycopg's Jsonb would serialize them again)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


_raw_jsonb_dumper: Any = None


def _raw_jsonb_dumper_class() -> Any:
    global _raw_jsonb_dumper
    if _raw_jsonb_dumper is None:
        import psycopg
        from psycopg.adapt import Dumper
        from psycopg.pq import Format

        class RawJsonbDumper(Dumper):
            format = Format.BINARY
            oid = psycopg.adapters.types["jsonb"].oid

            def dump(self, obj: Any) -> bytes:
                data: bytes = obj.data
                return b"\x01" + data  # jsonb's binary format: version 1, then the text

        _raw_jsonb_dumper = RawJsonbDumper
    return _raw_jsonb_dumper
