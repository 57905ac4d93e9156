"""The ``auth.api_keys`` table, the API key metadata model, and every SQL statement on it (pure)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from llmproxy.core import metadata

api_keys_table = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column(
        "tenant_id",
        sa.Uuid,
        sa.ForeignKey("tenants.tenants.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("hint", sa.String(40), nullable=False),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    schema="auth",
)

_t = api_keys_table
_METADATA_COLUMNS = (
    _t.c.id,
    _t.c.tenant_id,
    _t.c.name,
    _t.c.hint,
    _t.c.scopes,
    _t.c.created_at,
    _t.c.expires_at,
    _t.c.revoked_at,
    _t.c.last_used_at,
)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key's metadata. The secret is never stored; ``hint`` shows its first and last characters."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    hint: str
    scopes: frozenset[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def is_active(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    """What :meth:`ApiKeyService.create` returns: the secret, shown this once, and the key's metadata."""

    secret: str
    key: ApiKey

    def __repr__(self) -> str:  # the secret must not end up in logs through a repr
        return f"CreatedApiKey(secret='{self.key.hint}', key={self.key!r})"


def utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every datetime we store is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def row_to_api_key(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        hint=row.hint,
        scopes=frozenset(row.scopes or ()),
        created_at=utc(row.created_at),  # type: ignore[arg-type]
        expires_at=utc(row.expires_at),
        revoked_at=utc(row.revoked_at),
        last_used_at=utc(row.last_used_at),
    )


def insert_key(key: ApiKey, key_hash: str) -> sa.Insert:
    return sa.insert(_t).values(
        id=key.id,
        tenant_id=key.tenant_id,
        name=key.name,
        key_hash=key_hash,
        hint=key.hint,
        scopes=sorted(key.scopes),
        created_at=key.created_at,
        expires_at=key.expires_at,
    )


def select_by_hash(key_hash: str) -> sa.Select[Any]:
    return sa.select(
        _t.c.id, _t.c.tenant_id, _t.c.key_hash, _t.c.scopes, _t.c.expires_at, _t.c.revoked_at
    ).where(_t.c.key_hash == key_hash)


def select_by_id(key_id: uuid.UUID) -> sa.Select[Any]:
    return sa.select(*_METADATA_COLUMNS, _t.c.key_hash).where(_t.c.id == key_id)


def select_by_tenant(tenant_id: uuid.UUID) -> sa.Select[Any]:
    return sa.select(*_METADATA_COLUMNS).where(_t.c.tenant_id == tenant_id).order_by(_t.c.created_at, _t.c.id)


def revoke_key(key_id: uuid.UUID, when: datetime) -> sa.Update:
    return sa.update(_t).where(_t.c.id == key_id, _t.c.revoked_at.is_(None)).values(revoked_at=when)


def select_hashes_by_tenant(tenant_id: uuid.UUID) -> sa.Select[Any]:
    return sa.select(_t.c.id, _t.c.tenant_id, _t.c.key_hash).where(_t.c.tenant_id == tenant_id)


def revoke_tenant_keys(tenant_id: uuid.UUID, when: datetime) -> sa.Update:
    return sa.update(_t).where(_t.c.tenant_id == tenant_id, _t.c.revoked_at.is_(None)).values(revoked_at=when)


def touch_keys() -> sa.Update:
    """Executed with many parameter sets ``{"key_id", "used_at"}``; never moves ``last_used_at`` backwards."""
    return (
        sa.update(_t)
        .where(
            _t.c.id == sa.bindparam("key_id"),
            sa.or_(_t.c.last_used_at.is_(None), _t.c.last_used_at < sa.bindparam("used_at")),
        )
        .values(last_used_at=sa.bindparam("used_at"))
    )


def touch_params(last_used: dict[str, float]) -> Sequence[dict[str, Any]]:
    return [
        {"key_id": uuid.UUID(key_id), "used_at": datetime.fromtimestamp(ts, UTC)}
        for key_id, ts in sorted(last_used.items())
    ]
