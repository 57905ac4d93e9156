"""The tenant registry: create, read, list and delete tenants.

The asyncio class is the source; the sync class is generated from it by ``scripts/unasync.py``. The statements
and the row mapping are in ``_tenants.py``.
"""

from __future__ import annotations

import builtins
import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ._tenants import (
    Tenant,
    TenantExists,
    TenantNotFound,
    delete_tenant,
    insert_tenant,
    select_page,
    select_tenant,
    to_tenant,
)


class AsyncTenantRegistry:
    """Create, read, list and delete tenants."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, name: str, *, tenant_id: uuid.UUID | None = None) -> Tenant:
        """A new tenant; ``TenantExists`` when its name or id is taken, ``ValidationError`` for a bad name."""
        tenant, stmt = insert_tenant(name, tenant_id)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(stmt)
        except sa.exc.IntegrityError as exc:
            raise TenantExists(f"a tenant named {name!r} or with id {tenant.id} already exists") from exc
        return tenant

    async def get(self, tenant_id: uuid.UUID) -> Tenant:
        """The tenant; ``TenantNotFound`` when there is none."""
        async with self._engine.connect() as conn:
            result = await conn.execute(select_tenant(tenant_id))
            row = result.first()
        if row is None:
            raise TenantNotFound(tenant_id)
        return to_tenant(row)

    async def exists(self, tenant_id: uuid.UUID) -> bool:
        """Whether the tenant exists."""
        try:
            await self.get(tenant_id)
        except TenantNotFound:
            return False
        return True

    async def list(self, *, limit: int = 100, offset: int = 0) -> builtins.list[Tenant]:
        """Tenants in creation order, ``limit`` (1..1000) at a time."""
        async with self._engine.connect() as conn:
            result = await conn.execute(select_page(limit, offset))
            return [to_tenant(row) for row in result]

    async def delete(self, tenant_id: uuid.UUID) -> bool:
        """True when there was such a tenant (what it owned is deleted with it: ``ON DELETE CASCADE``)."""
        async with self._engine.begin() as conn:
            result = await conn.execute(delete_tenant(tenant_id))
        return result.rowcount > 0
