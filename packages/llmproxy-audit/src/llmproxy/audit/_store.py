"""Storing batches of events with their place in each tenant's chain: the SQL once, over a sync
``Connection``.

One transaction per batch: lock the chain head of every tenant in the batch (an upsert on
``audit_chain_heads`` takes the row lock on both PostgreSQL and SQLite), link the events and insert them
under a savepoint. If some were stored already (a redelivery after a crash between commit and
acknowledgement, or an event a publisher sent twice), the insert fails on the primary key
``(event_time, event_id)``: it is rolled back to the savepoint, the stored ones are looked up and left out,
and the rest are linked again and inserted, so a duplicate never takes a sequence number. (The look-up is
done only then: it cost the common case ~3 us per event.) Heads move and checkpoints are written in the same
transaction.

The look-up is safe against a concurrent insert of the same event because every insert of a tenant's events
holds that tenant's head lock, and an event id belongs to one event of one tenant. Should two different
events share an id (a broken publisher), the second one counts as a duplicate.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from ._chain import GENESIS, Checkpoint, CheckpointSigner, HashParts, event_row, hash_parts, link
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


@contextmanager
def _cursor(conn: Connection, sql: str) -> Iterator[Any]:
    """The connection's psycopg cursor, in its transaction, closed after. psycopg's own errors are raised as
    SQLAlchemy's (``IntegrityError``, ``DataError``, ``OperationalError``, …), as they are from
    ``conn.execute``: the consumer tells a refused event from a lost database by them."""
    import psycopg

    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        yield cursor
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError.instance(sql, None, exc, psycopg.Error) from exc
    finally:
        cursor.close()


def _pg(conn: Connection, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Run ``sql`` on the connection's psycopg cursor, binary parameters (``%b``), in its transaction."""
    with _cursor(conn, sql) as cursor:
        cursor.execute(sql, params)
        rows: list[tuple[Any, ...]] = list(cursor.fetchall()) if cursor.description else []
        return rows


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
    """A batch made ready to store, without the database: its rows (``event_row`` columns, the event time
    and the row's ``hash_parts``), one per distinct event id, and how many events were given. Made before the
    transaction, so the chain heads stay locked only for the linking (a concatenation and a SHA-256 per
    event) and the SQL."""

    rows: tuple[dict[str, Any], ...]
    given: int

    @property
    def months(self) -> set[tuple[int, int]]:
        return {month_of(row["event_time"]) for row in self.rows}


def prepare_batch(batch: Sequence[AuditEvent]) -> PreparedBatch:
    """The rows of ``batch``; raises what hashing an event raises (``ValueError``, ``TypeError``,
    ``RecursionError``)."""
    unique: dict[uuid.UUID, AuditEvent] = {}
    for event in batch:
        unique.setdefault(event.event_id, event)
    rows = []
    for event in unique.values():
        row = event_row(event)
        row["event_time"] = event.timestamp
        parts = row["parts"] = hash_parts(row)
        if parts.stable is not None:  # floats jsonb would give back otherwise: stored (and hashed) as it will
            row["metadata"], row["new_values"], row["old_values"] = parts.stable
        rows.append(row)
    return PreparedBatch(tuple(rows), len(batch))


def store_batch(
    conn: Connection,
    batch: Sequence[AuditEvent],
    *,
    now_ms: int,
    policy: CheckpointPolicy | None = None,
) -> StoreResult:
    """Store ``batch`` in the caller's transaction (call inside ``engine.begin()``)."""
    return store_prepared(conn, prepare_batch(batch), now_ms=now_ms, policy=policy)


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
    new_heads = _linked(rows, locked)
    savepoint = conn.begin_nested()
    try:
        _insert_rows(conn, rows)
        savepoint.commit()
    except sa.exc.IntegrityError:
        # Some were stored already (a redelivery): their sequence numbers would leave gaps. Back to the
        # savepoint, leave them out, link the rest again.
        savepoint.rollback()
        stored = _stored_already(conn, rows)
        if not stored:
            raise  # not a duplicate: the consumer stores the batch event by event to find the culprit
        rows = [row for row in rows if row["event_id"] not in stored]
        new_heads = _linked(rows, locked)
        if rows:
            _insert_rows(conn, rows)
    written = _move_heads(conn, new_heads, locked, now_ms, policy)
    return StoreResult(
        len(rows),
        prepared.given - len(rows),
        written,
        frozenset(month_of(row["event_time"]) for row in rows),
    )


_COLUMNS = tuple(c.name for c in events.columns)
_JSON_COLUMNS = ("old_values", "new_values", "metadata")
# The types the COPY's values are dumped as (text when not named): the UUIDs and the JSON values as bytes,
# which are their binary forms.
_PG_TYPES = {
    "event_time": "timestamptz", "event_id": "bytea", "tenant_id": "bytea", "seq": "int8",
    "prev_hash": "bytea", "hash": "bytea", "schema_version": "int2", "recorded_at": "timestamptz",
    **dict.fromkeys(_JSON_COLUMNS, "bytea"),
}  # fmt: skip
# PostgreSQL: the rows are copied into the events table (binary COPY: psycopg formats the rows in C, and the
# server inserts them in bulk). Each value is written in its type's binary form: the UUIDs as their 16 bytes,
# the JSON values as jsonb's (a version byte, then the canonical text the chain hashes: ``HashParts``, so
# nothing is serialized twice). This replaced an INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING
# that carried each event's whole JSON body: psycopg's Python list dumping cost the consumer ~15 us per event
# and the server spent ~30 us per event parsing the bodies and inserting row by row, against ~12 us for the
# copy (measured, batches of 1000). The look-up of events stored already (~3 us per event) runs only when the
# primary key refuses one (store_prepared).
_PG_COPY = f"COPY audit.audit_events ({', '.join(_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_PG_COPY_TYPES = [_PG_TYPES.get(c, "text") for c in _COLUMNS]
# _pg_insert writes each row's values in this order
assert _COLUMNS == (
    "event_time", "event_id", "tenant_id", "seq", "prev_hash", "hash", "schema_version", "action",
    "entity_type", "entity_id", "actor_type", "user_id", "api_key_id", "outcome", "request_id", "ip_address",
    "user_agent", "old_values", "new_values", "metadata", "recorded_at",
)  # fmt: skip
_JSONB = b"\x01"  # jsonb's binary format: version 1, then the text
_PG_STORED = (
    "SELECT e.event_id FROM audit.audit_events e JOIN unnest(%b::timestamptz[], %b::uuid[]) AS u(t, i) "
    "ON e.event_time = u.t AND e.event_id = u.i"
)
_SQLITE_CHUNK = 500  # ids per IN (...): well under SQLite's limit of bound variables


def _stored_already(conn: Connection, rows: list[dict[str, Any]]) -> set[uuid.UUID]:
    """The ids of ``rows`` that are in the table already."""
    if conn.dialect.name == "postgresql":
        found = _pg(conn, _PG_STORED, [[r["event_time"] for r in rows], [r["event_id"] for r in rows]])
        return {r[0] for r in found}
    out: set[uuid.UUID] = set()
    for i in range(0, len(rows), _SQLITE_CHUNK):
        ids = [r["event_id"] for r in rows[i : i + _SQLITE_CHUNK]]
        out.update(conn.execute(sa.select(events.c.event_id).where(events.c.event_id.in_(ids))).scalars())
    return out


def _pg_insert(conn: Connection, rows: list[dict[str, Any]]) -> None:
    with _cursor(conn, _PG_COPY) as cursor:
        # set_types picks dumpers by type oid, and for bytea that is psycopg.dbapi20's (Python, registered
        # last); the dumper of bytes itself is the C one. Registered on this cursor only.
        cursor.adapters.register_dumper(bytes, _bytes_dumper())
        with cursor.copy(_PG_COPY) as copy:
            copy.set_types(_PG_COPY_TYPES)
            write = copy.write_row
            for row in rows:
                parts: HashParts = row["parts"]
                old, new = parts.old_values, parts.new_values
                write(
                    (row["event_time"], row["event_id"].bytes, row["tenant_id"].bytes, row["seq"],
                     row["prev_hash"], row["hash"], row["schema_version"], row["action"], row["entity_type"],
                     row["entity_id"], row["actor_type"], row["user_id"], row["api_key_id"], row["outcome"],
                     row["request_id"], row["ip_address"], row["user_agent"],
                     None if old is None else _JSONB + old, None if new is None else _JSONB + new,
                     _JSONB + parts.metadata, row["recorded_at"])
                )  # fmt: skip


def _bytes_dumper() -> Any:
    from psycopg import adapters
    from psycopg.adapt import PyFormat

    return adapters.get_dumper(bytes, PyFormat.BINARY)


def _insert_rows(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (none of them stored already)."""
    if conn.dialect.name == "postgresql":
        _pg_insert(conn, rows)
        return
    conn.execute(_insert(conn, events), [{name: row[name] for name in _COLUMNS} for row in rows])


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
