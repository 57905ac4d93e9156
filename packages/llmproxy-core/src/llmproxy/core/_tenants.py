"""The tenant registry's table, model, errors and statements: the ``tenants.tenants`` table other packages'
tables reference. The registries that run the statements are in ``_registry.py`` (asyncio, the source) and
``_registry_sync.py`` (generated from it by ``scripts/unasync.py``)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, StringConstraints

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


def to_tenant(row: sa.Row[tuple[uuid.UUID, str, datetime]]) -> Tenant:
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return Tenant(id=row.id, name=row.name, created_at=created)


def insert_tenant(name: str, tenant_id: uuid.UUID | None) -> tuple[Tenant, sa.Insert]:
    tenant = Tenant(id=tenant_id or uuid.uuid4(), name=name, created_at=datetime.now(UTC))
    return tenant, sa.insert(tenants_table).values(
        id=tenant.id, name=tenant.name, created_at=tenant.created_at
    )


def select_tenant(tenant_id: uuid.UUID) -> sa.Select[tuple[uuid.UUID, str, datetime]]:
    return sa.select(tenants_table.c.id, tenants_table.c.name, tenants_table.c.created_at).where(
        tenants_table.c.id == tenant_id
    )


def select_page(limit: int, offset: int) -> sa.Select[tuple[uuid.UUID, str, datetime]]:
    if limit < 1 or limit > 1000 or offset < 0:
        raise ValueError("limit must be 1..1000 and offset >= 0")
    return (
        sa.select(tenants_table.c.id, tenants_table.c.name, tenants_table.c.created_at)
        .order_by(tenants_table.c.created_at, tenants_table.c.id)
        .limit(limit)
        .offset(offset)
    )


def delete_tenant(tenant_id: uuid.UUID) -> sa.Delete:
    return sa.delete(tenants_table).where(tenants_table.c.id == tenant_id)
