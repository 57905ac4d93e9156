"""The tenant registry: the ``tenants.tenants`` table other packages' tables reference."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, StringConstraints
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from ._sql import metadata

tenants_table = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    schema="tenants",
)

TenantName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class Tenant(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    name: TenantName
    created_at: datetime


class TenantNotFound(LookupError):
    def __init__(self, tenant_id: uuid.UUID) -> None:
        super().__init__(f"tenant {tenant_id} does not exist")
        self.tenant_id = tenant_id


class TenantExists(ValueError):
    pass


def _row_to_tenant(row: sa.Row[tuple[uuid.UUID, str, datetime]]) -> Tenant:
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return Tenant(id=row.id, name=row.name, created_at=created)


def _insert(name: str, tenant_id: uuid.UUID | None) -> tuple[Tenant, sa.Insert]:
    tenant = Tenant(id=tenant_id or uuid.uuid4(), name=name, created_at=datetime.now(UTC))
    return tenant, sa.insert(tenants_table).values(
        id=tenant.id, name=tenant.name, created_at=tenant.created_at
    )


def _select_one(tenant_id: uuid.UUID) -> sa.Select[tuple[uuid.UUID, str, datetime]]:
    return sa.select(tenants_table.c.id, tenants_table.c.name, tenants_table.c.created_at).where(
        tenants_table.c.id == tenant_id
    )


def _select_page(limit: int, offset: int) -> sa.Select[tuple[uuid.UUID, str, datetime]]:
    if limit < 1 or limit > 1000 or offset < 0:
        raise ValueError("limit must be 1..1000 and offset >= 0")
    return (
        sa.select(tenants_table.c.id, tenants_table.c.name, tenants_table.c.created_at)
        .order_by(tenants_table.c.created_at, tenants_table.c.id)
        .limit(limit)
        .offset(offset)
    )


class TenantRegistry:
    """Create, read, list and delete tenants (sync)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, name: str, *, tenant_id: uuid.UUID | None = None) -> Tenant:
        tenant, stmt = _insert(name, tenant_id)
        try:
            with self._engine.begin() as conn:
                conn.execute(stmt)
        except sa.exc.IntegrityError as exc:
            raise TenantExists(f"a tenant named {name!r} or with id {tenant.id} already exists") from exc
        return tenant

    def get(self, tenant_id: uuid.UUID) -> Tenant:
        with self._engine.connect() as conn:
            row = conn.execute(_select_one(tenant_id)).first()
        if row is None:
            raise TenantNotFound(tenant_id)
        return _row_to_tenant(row)

    def exists(self, tenant_id: uuid.UUID) -> bool:
        try:
            self.get(tenant_id)
        except TenantNotFound:
            return False
        return True

    def list(self, *, limit: int = 100, offset: int = 0) -> list[Tenant]:
        with self._engine.connect() as conn:
            return [_row_to_tenant(r) for r in conn.execute(_select_page(limit, offset))]

    def delete(self, tenant_id: uuid.UUID) -> bool:
        with self._engine.begin() as conn:
            result = conn.execute(sa.delete(tenants_table).where(tenants_table.c.id == tenant_id))
        return result.rowcount > 0


class AsyncTenantRegistry:
    """Create, read, list and delete tenants (asyncio)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, name: str, *, tenant_id: uuid.UUID | None = None) -> Tenant:
        tenant, stmt = _insert(name, tenant_id)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(stmt)
        except sa.exc.IntegrityError as exc:
            raise TenantExists(f"a tenant named {name!r} or with id {tenant.id} already exists") from exc
        return tenant

    async def get(self, tenant_id: uuid.UUID) -> Tenant:
        async with self._engine.connect() as conn:
            row = (await conn.execute(_select_one(tenant_id))).first()
        if row is None:
            raise TenantNotFound(tenant_id)
        return _row_to_tenant(row)

    async def list(self, *, limit: int = 100, offset: int = 0) -> list[Tenant]:
        async with self._engine.connect() as conn:
            return [_row_to_tenant(r) for r in await conn.execute(_select_page(limit, offset))]

    async def delete(self, tenant_id: uuid.UUID) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(sa.delete(tenants_table).where(tenants_table.c.id == tenant_id))
        return result.rowcount > 0
