"""Storage of configurations: every SQL decision once, over a sync ``Connection``.

The async repository runs the very same functions through ``AsyncConnection.run_sync``, so there is one
copy of the SQL and of the row mapping.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from llmproxy.core import TenantNotFound, tenants_table

from ._children import Children, load_children, replace_children
from ._models import ApiKeyLimit, GlobalLimit, TenantRateLimitConfiguration
from ._tables import configurations_table as configs

MAX_PAGE = 1000

_GLOBAL_COLUMNS = {
    "requests_per_minute": "global_requests_per_minute",
    "requests_per_day": "global_requests_per_day",
    "tokens_per_minute": "global_tokens_per_minute",
    "tokens_per_day": "global_tokens_per_day",
}
_API_KEY_COLUMNS = {
    "requests_per_minute": "api_key_requests_per_minute",
    "tokens_per_minute": "api_key_tokens_per_minute",
}


# -- mapping


def _config_values(config: TenantRateLimitConfiguration) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field, column in _GLOBAL_COLUMNS.items():
        values[column] = getattr(config.global_limit, field)
    for field, column in _API_KEY_COLUMNS.items():
        values[column] = getattr(config.api_key_limit, field)
    return values


def _to_model(row: sa.Row[Any], children: Children) -> TenantRateLimitConfiguration:
    return TenantRateLimitConfiguration(
        tenant_id=row.tenant_id,
        global_limit=GlobalLimit(**{f: getattr(row, c) for f, c in _GLOBAL_COLUMNS.items()}),
        api_key_limit=ApiKeyLimit(**{f: getattr(row, c) for f, c in _API_KEY_COLUMNS.items()}),
        **children.fields(),
    )


def _load_many(conn: Connection, rows: Sequence[sa.Row[Any]]) -> list[TenantRateLimitConfiguration]:
    if not rows:
        return []
    children = load_children(conn, (row.id for row in rows))
    return [_to_model(row, children[row.id]) for row in rows]


# -- operations (one copy, sync Connection)


def get_config(conn: Connection, tenant_id: uuid.UUID) -> TenantRateLimitConfiguration | None:
    row = conn.execute(sa.select(configs).where(configs.c.tenant_id == tenant_id)).first()
    if row is None:
        return None
    return _load_many(conn, [row])[0]


def _insert_or_update(conn: Connection, config: TenantRateLimitConfiguration, now: datetime) -> uuid.UUID:
    values = _config_values(config)
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(configs).values(
        id=uuid.uuid4(), tenant_id=config.tenant_id, created_at=now, updated_at=now, **values
    )
    # ON CONFLICT keeps two concurrent first writes of one tenant from failing on the unique index.
    stmt = stmt.on_conflict_do_update(
        index_elements=[configs.c.tenant_id], set_={**values, "updated_at": now}
    ).returning(configs.c.id)
    config_id: uuid.UUID = conn.execute(stmt).scalar_one()
    return config_id


def upsert_config(conn: Connection, config: TenantRateLimitConfiguration) -> TenantRateLimitConfiguration:
    tenant = conn.execute(sa.select(tenants_table.c.id).where(tenants_table.c.id == config.tenant_id)).first()
    if tenant is None:
        raise TenantNotFound(config.tenant_id)
    now = datetime.now(UTC)
    try:
        config_id = _insert_or_update(conn, config, now)
    except sa.exc.IntegrityError as exc:  # the tenant was deleted between the check and the write
        raise TenantNotFound(config.tenant_id) from exc
    # Endpoint limits, model limits, budgets and allow-lists are replaced as sets, in this transaction.
    replace_children(conn, config_id, config, now)
    return config


def delete_config(conn: Connection, tenant_id: uuid.UUID) -> bool:
    result = conn.execute(sa.delete(configs).where(configs.c.tenant_id == tenant_id))
    return result.rowcount > 0


def list_configs(conn: Connection, limit: int, offset: int) -> list[TenantRateLimitConfiguration]:
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise ValueError(f"limit must be 1..{MAX_PAGE} and offset >= 0 (got limit={limit}, offset={offset})")
    stmt = sa.select(configs).order_by(configs.c.created_at, configs.c.id).limit(limit).offset(offset)
    return _load_many(conn, conn.execute(stmt).all())


def _checked(config: TenantRateLimitConfiguration) -> TenantRateLimitConfiguration:
    if not isinstance(config, TenantRateLimitConfiguration):
        raise TypeError(f"expected a TenantRateLimitConfiguration, got {type(config).__name__}")
    # Validated again: model_copy(update=...) and model_construct skip validation, and the database must
    # not hold what the model rejects (nor a value that would not read back equal).
    return TenantRateLimitConfiguration.model_validate(config.model_dump())


# -- shells


class RateLimitConfigRepository:
    """Per-tenant configurations in the database (sync). No caching: see ``RateLimitConfigService``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get_by_tenant_id(self, tenant_id: uuid.UUID) -> TenantRateLimitConfiguration | None:
        with self.engine.connect() as conn:
            return get_config(conn, tenant_id)

    def upsert(self, config: TenantRateLimitConfiguration) -> TenantRateLimitConfiguration:
        """Insert or replace the tenant's configuration (its child limits, budgets and allow-lists as sets);
        ``TenantNotFound``."""
        config = _checked(config)
        with self.engine.begin() as conn:
            return upsert_config(conn, config)

    def delete(self, tenant_id: uuid.UUID) -> bool:
        with self.engine.begin() as conn:
            return delete_config(conn, tenant_id)

    def list(self, *, limit: int = 100, offset: int = 0) -> builtins.list[TenantRateLimitConfiguration]:
        with self.engine.connect() as conn:
            return list_configs(conn, limit, offset)


class AsyncRateLimitConfigRepository:
    """Per-tenant configurations in the database (asyncio)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def get_by_tenant_id(self, tenant_id: uuid.UUID) -> TenantRateLimitConfiguration | None:
        async with self.engine.connect() as conn:
            return await conn.run_sync(get_config, tenant_id)

    async def upsert(self, config: TenantRateLimitConfiguration) -> TenantRateLimitConfiguration:
        """Insert or replace the tenant's configuration (its child limits, budgets and allow-lists as sets);
        ``TenantNotFound``."""
        config = _checked(config)
        async with self.engine.begin() as conn:
            return await conn.run_sync(upsert_config, config)

    async def delete(self, tenant_id: uuid.UUID) -> bool:
        async with self.engine.begin() as conn:
            return await conn.run_sync(delete_config, tenant_id)

    async def list(self, *, limit: int = 100, offset: int = 0) -> builtins.list[TenantRateLimitConfiguration]:
        async with self.engine.connect() as conn:
            return await conn.run_sync(list_configs, limit, offset)
