"""audit events (partitioned by month on PostgreSQL), chain heads, checkpoints

Revision ID: audit_0001
Revises:
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from llmproxy.audit._tables import EVENT_INDEXES, JSONType, event_columns
from llmproxy.core import create_schema, drop_schema

revision = "audit_0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "audit"


def upgrade() -> None:
    create_schema(SCHEMA)
    postgres = op.get_bind().dialect.name == "postgresql"
    schema = SCHEMA if postgres else None
    options: dict[str, Any] = {"postgresql_partition_by": "RANGE (event_time)"} if postgres else {}
    op.create_table("audit_events", *event_columns(), schema=schema, **options)
    for name, columns in EVENT_INDEXES:
        op.create_index(name, "audit_events", list(columns), schema=schema)
    op.create_table(
        "audit_chain_heads",
        sa.Column("tenant_id", sa.Uuid, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.Column("checkpoint_seq", sa.BigInteger, nullable=False),
        sa.Column("checkpoint_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_audit_chain_heads"),
        schema=schema,
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True),
        sa.Column("tenant_id", sa.Uuid, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("retained", JSONType, nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("signature", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_checkpoints"),
        schema=schema,
    )
    op.create_index(
        "ix_audit_checkpoints_tenant_seq", "audit_checkpoints", ["tenant_id", "seq"], schema=schema
    )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    schema = SCHEMA if postgres else None
    op.drop_table("audit_checkpoints", schema=schema)
    op.drop_table("audit_chain_heads", schema=schema)
    # Dropping the partitioned parent drops every partition with it.
    op.drop_table("audit_events", schema=schema)
    drop_schema(SCHEMA)
