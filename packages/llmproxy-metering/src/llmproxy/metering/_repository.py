"""The SQL, written once as functions of a sync ``Connection`` (async callers use ``run_sync``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from llmproxy.core import tenants_table

from ._keys import METRICS
from ._prices import PriceOverride
from ._tables import flush_state_table, price_overrides_table, usage_hourly_table

Row = tuple[Any, ...]  # (tenant_id, hour, model, api_key_id, endpoint, *METRICS)
_KEY_COLUMNS = ("tenant_id", "hour", "model", "api_key_id", "endpoint")


def _insert(conn: Connection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def _greatest(conn: Connection, a: Any, b: Any) -> Any:
    # PostgreSQL's GREATEST; SQLite's two-argument scalar max() is the same function.
    return sa.func.greatest(a, b) if conn.dialect.name == "postgresql" else sa.func.max(a, b)


def upsert_hours(conn: Connection, rows: Sequence[Row]) -> int:
    """Write whole bucket totals: each counter becomes the greater of the stored and the given value, so a
    retry, a stale reader or a second flusher can never lower or add to what is there."""
    if not rows:
        return 0
    stmt = _insert(conn, usage_hourly_table)
    table = usage_hourly_table
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c[name] for name in _KEY_COLUMNS],
        set_={name: _greatest(conn, table.c[name], stmt.excluded[name]) for name in METRICS},
    )
    names = (*_KEY_COLUMNS, *METRICS)
    conn.execute(stmt, [dict(zip(names, row, strict=True)) for row in rows])
    return len(rows)


def existing_tenants(conn: Connection, tenant_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    ids = list(set(tenant_ids))
    found: set[uuid.UUID] = set()
    for i in range(0, len(ids), 1000):
        chunk = ids[i : i + 1000]
        found.update(
            conn.execute(sa.select(tenants_table.c.id).where(tenants_table.c.id.in_(chunk))).scalars()
        )
    return found


def all_tenants(conn: Connection) -> list[uuid.UUID]:
    return list(conn.execute(sa.select(tenants_table.c.id)).scalars())


def load_cursor(conn: Connection, name: str) -> int | None:
    value = conn.execute(
        sa.select(flush_state_table.c.cursor_ms).where(flush_state_table.c.name == name)
    ).scalar_one_or_none()
    return None if value is None else int(value)


def save_cursor(conn: Connection, name: str, cursor_ms: int) -> None:
    """Move the cursor forward (never back: a slow flusher finishing late cannot undo a faster one)."""
    table = flush_state_table
    stmt = _insert(conn, table).values(name=name, cursor_ms=cursor_ms, updated_at=datetime.now(UTC))
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.name],
        set_={
            "cursor_ms": _greatest(conn, table.c.cursor_ms, stmt.excluded.cursor_ms),
            "updated_at": stmt.excluded.updated_at,
        },
    )
    conn.execute(stmt)


def usage_rows(
    conn: Connection,
    tenant_id: uuid.UUID,
    first: int,
    last: int,
    group_by: tuple[str, ...],
    periods: Sequence[int] = (),
) -> list[Row]:
    """``(hour, model, api_key_id, endpoint, *sums)`` for hours in ``[first, last)``; dimensions outside
    ``group_by`` are summed over and come back as "" (except ``model``, kept for the per-model counts).

    With ``periods`` (the first hours of the query's buckets, ascending), rows are summed per bucket in the
    database and ``hour`` is the bucket's first hour: a month by day is 30 rows per model, not 720."""
    table = usage_hourly_table
    hour: Any = table.c.hour
    if periods:
        hour = sa.case(*((table.c.hour >= p, p) for p in reversed(periods)), else_=table.c.hour)
    kept = [hour, table.c.model]
    dims: list[Any] = [table.c.model]
    for name in ("api_key_id", "endpoint"):
        column = table.c[name]
        if name in group_by:
            kept.append(column)
            dims.append(column)
        else:
            dims.append(sa.literal("").label(name))
    stmt = (
        sa.select(hour, *dims, *(sa.func.sum(table.c[m]) for m in METRICS))
        .where(table.c.tenant_id == tenant_id, table.c.hour >= first, table.c.hour < last)
        .group_by(*kept)
    )
    return [tuple(row) for row in conn.execute(stmt)]


# -- price overrides -----------------------------------------------------------------------------------------


def _override_of(row: Any) -> PriceOverride:
    def dec(value: Any) -> Decimal | None:
        return None if value is None else Decimal(str(value))

    return PriceOverride(
        tenant_id=row.tenant_id,
        model=row.model,
        input_per_mtok=dec(row.input_per_mtok),
        cached_input_per_mtok=dec(row.cached_input_per_mtok),
        output_per_mtok=dec(row.output_per_mtok),
        per_request=dec(row.per_request),
    )


def _scope(tenant_id: uuid.UUID | None) -> Any:
    column = price_overrides_table.c.tenant_id
    return column.is_(None) if tenant_id is None else column == tenant_id


def list_overrides(
    conn: Connection, tenant_id: uuid.UUID | None = None, *, every: bool = False
) -> list[PriceOverride]:
    """The overrides of one tenant (or the global ones with None); ``every=True``: all of them."""
    table = price_overrides_table
    stmt = sa.select(table).order_by(table.c.model)
    if not every:
        stmt = stmt.where(_scope(tenant_id))
    return [_override_of(row) for row in conn.execute(stmt)]


def get_override(conn: Connection, tenant_id: uuid.UUID | None, model: str) -> PriceOverride | None:
    table = price_overrides_table
    row = conn.execute(sa.select(table).where(_scope(tenant_id), table.c.model == model)).first()
    return None if row is None else _override_of(row)


def _price_value(conn: Connection, value: Decimal | None) -> Any:
    if value is None:
        return None
    return str(value) if conn.dialect.name == "sqlite" else value


def put_override(conn: Connection, override: PriceOverride) -> PriceOverride:
    """Create or replace the override of ``(tenant_id, model)``."""
    table = price_overrides_table
    values = {
        "input_per_mtok": _price_value(conn, override.input_per_mtok),
        "cached_input_per_mtok": _price_value(conn, override.cached_input_per_mtok),
        "output_per_mtok": _price_value(conn, override.output_per_mtok),
        "per_request": _price_value(conn, override.per_request),
        "updated_at": datetime.now(UTC),
    }
    updated = conn.execute(
        sa.update(table).where(_scope(override.tenant_id), table.c.model == override.model).values(**values)
    )
    if updated.rowcount == 0:
        conn.execute(
            sa.insert(table).values(
                id=uuid.uuid4(), tenant_id=override.tenant_id, model=override.model, **values
            )
        )
    return override


def delete_override(conn: Connection, tenant_id: uuid.UUID | None, model: str) -> bool:
    table = price_overrides_table
    result = conn.execute(sa.delete(table).where(_scope(tenant_id), table.c.model == model))
    return result.rowcount > 0


class AsyncPriceOverrides:
    """Price override CRUD on an async engine (the admin API)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def list(self, tenant_id: uuid.UUID | None = None, *, every: bool = False) -> list[PriceOverride]:
        async with self.engine.connect() as conn:
            return await conn.run_sync(list_overrides, tenant_id, every=every)

    async def get(self, tenant_id: uuid.UUID | None, model: str) -> PriceOverride | None:
        async with self.engine.connect() as conn:
            return await conn.run_sync(get_override, tenant_id, model)

    async def put(self, override: PriceOverride) -> PriceOverride:
        async with self.engine.begin() as conn:
            return await conn.run_sync(put_override, override)

    async def delete(self, tenant_id: uuid.UUID | None, model: str) -> bool:
        async with self.engine.begin() as conn:
            return await conn.run_sync(delete_override, tenant_id, model)
