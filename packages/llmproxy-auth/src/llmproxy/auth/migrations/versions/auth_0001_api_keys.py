"""api keys

Revision ID: auth_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from llmproxy.core import create_schema, drop_schema

revision = "auth_0001"
down_revision = None
branch_labels = None
depends_on = None


def _schema() -> str | None:
    # SQLite drops a foreign key whose target lies in another schema, even a translated-away one: there the
    # table is created schema-less so that ON DELETE CASCADE to tenants really exists.
    return None if op.get_bind().dialect.name == "sqlite" else "auth"


def upgrade() -> None:
    create_schema("auth")
    schema = _schema()
    tenants_id = "tenants.tenants.id" if schema else "tenants.id"
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("tenant_id", sa.Uuid, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("hint", sa.String(40), nullable=False),
        sa.Column("scopes", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], [tenants_id], name="fk_api_keys_tenant_id_tenants", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
        schema=schema,
    )
    op.create_index("ix_api_keys_tenant_id", "api_keys", ["tenant_id"], schema=schema)


def downgrade() -> None:
    schema = _schema()
    op.drop_index("ix_api_keys_tenant_id", table_name="api_keys", schema=schema)
    op.drop_table("api_keys", schema=schema)
    drop_schema("auth")
