"""SQLAlchemy tables of the ``audit`` schema (SQLite translates the schema away).

``audit_events`` is range-partitioned by month of ``event_time`` on PostgreSQL (partitions are made by
``_partitions.py``). Its primary key is ``(event_time, event_id)`` because a unique constraint on a
partitioned table must contain the partition key; since ``event_time`` is the millisecond carried by the
UUIDv7 ``event_id``, that key is as unique as the id alone. There is no foreign key to the tenants: the audit
trail of a tenant outlives the tenant (its deletion is itself audited).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from llmproxy.core import metadata

SCHEMA = "audit"

JSONType = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def event_columns() -> list[Any]:
    return [
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.Uuid, nullable=False),
        sa.Column("tenant_id", sa.Uuid, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.Column("schema_version", sa.SmallInteger, nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("entity_type", sa.String(100), nullable=False),
        sa.Column("entity_id", sa.String(200)),
        sa.Column("actor_type", sa.String(20), nullable=False),
        sa.Column("user_id", sa.String(200)),
        sa.Column("api_key_id", sa.String(200)),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("request_id", sa.String(200)),
        sa.Column("ip_address", sa.String(45)),
        sa.Column("user_agent", sa.String(1000)),
        sa.Column("old_values", JSONType),
        sa.Column("new_values", JSONType),
        sa.Column("metadata", JSONType, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_time", "event_id", name="pk_audit_events"),
    ]


#: (name, columns) of the indexes; also used by the migration.
EVENT_INDEXES = (
    ("ix_audit_events_tenant_time", ("tenant_id", "event_time", "event_id")),
    ("ix_audit_events_tenant_actor", ("tenant_id", "user_id", "event_time")),
    ("ix_audit_events_tenant_action", ("tenant_id", "action", "event_time")),
    ("ix_audit_events_tenant_entity", ("tenant_id", "entity_type", "entity_id", "event_time")),
    ("ix_audit_events_tenant_seq", ("tenant_id", "seq")),
)

events_table = sa.Table(
    "audit_events",
    metadata,
    *event_columns(),
    *(sa.Index(name, *columns) for name, columns in EVENT_INDEXES),
    schema=SCHEMA,
    postgresql_partition_by="RANGE (event_time)",
)

#: One row per tenant: the end of its chain. Locked (``ON CONFLICT DO UPDATE``) by every insert of the tenant.
chain_heads_table = sa.Table(
    "audit_chain_heads",
    metadata,
    sa.Column("tenant_id", sa.Uuid, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.LargeBinary(32), nullable=False),
    sa.Column("checkpoint_seq", sa.BigInteger, nullable=False),
    sa.Column("checkpoint_ms", sa.BigInteger, nullable=False),
    schema=SCHEMA,
)

checkpoints_table = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("tenant_id", sa.Uuid, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.LargeBinary(32), nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("retained", JSONType, nullable=False),
    sa.Column("key_id", sa.String(32), nullable=False),
    sa.Column("signature", sa.String(64), nullable=False),
    sa.Index("ix_audit_checkpoints_tenant_seq", "tenant_id", "seq"),
    schema=SCHEMA,
)
