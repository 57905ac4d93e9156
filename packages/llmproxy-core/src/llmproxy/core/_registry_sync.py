# Generated from _registry.py by scripts/unasync.py (`nox -s unasync`): do not edit.
"""The tenant registry: create, read, list and delete tenants.

The asyncio class is the source; the sync class is generated from it by ``scripts/unasync.py``. The statements
and the row mapping are in ``_tenants.py``.
"""

from __future__ import annotations

import builtins
import uuid

import sqlalchemy as sa
from sqlalchemy.engine import Engine

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


class TenantRegistry:
    """Create, read, list and delete tenants."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, name: str, *, tenant_id: uuid.UUID | None = None) -> Tenant:
        """A new tenant; ``TenantExists`` when its name or id is taken, ``ValidationError`` for a bad name."""
        tenant, stmt = insert_tenant(name, tenant_id)
        try:
            with self._engine.begin() as conn:
                conn.execute(stmt)
        except sa.exc.IntegrityError as exc:
            raise TenantExists(f"a tenant named {name!r} or with id {tenant.id} already exists") from exc
        return tenant

    def get(self, tenant_id: uuid.UUID) -> Tenant:
        """The tenant; ``TenantNotFound`` when there is none."""
        with self._engine.connect() as conn:
            result = conn.execute(select_tenant(tenant_id))
            row = result.first()
        if row is None:
            raise TenantNotFound(tenant_id)
        return to_tenant(row)

    def exists(self, tenant_id: uuid.UUID) -> bool:
        """Whether the tenant exists."""
        try:
            self.get(tenant_id)
        except TenantNotFound:
            return False
        return True

    def list(self, *, limit: int = 100, offset: int = 0) -> builtins.list[Tenant]:
        """Tenants in creation order, ``limit`` (1..1000) at a time."""
        with self._engine.connect() as conn:
            result = conn.execute(select_page(limit, offset))
            return [to_tenant(row) for row in result]

    def delete(self, tenant_id: uuid.UUID) -> bool:
        """True when there was such a tenant (what it owned is deleted with it: ``ON DELETE CASCADE``)."""
        with self._engine.begin() as conn:
            result = conn.execute(delete_tenant(tenant_id))
        return result.rowcount > 0
