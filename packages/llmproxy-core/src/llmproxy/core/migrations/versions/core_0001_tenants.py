"""tenant registry

Revision ID: core_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from llmproxy.core import create_schema, drop_schema

revision = "core_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_schema("tenants")
    op.create_table(
        "tenants",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("name", name="uq_tenants_name"),
        schema="tenants",
    )


def downgrade() -> None:
    op.drop_table("tenants", schema="tenants")
    drop_schema("tenants")
