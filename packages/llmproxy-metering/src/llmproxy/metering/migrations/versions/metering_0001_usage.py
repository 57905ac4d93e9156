"""metering: hourly usage per tenant and combination, the flusher's cursor, price overrides

Revision ID: metering_0001
Revises:
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from llmproxy.core import create_schema, drop_schema

revision = "metering_0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "metering"
METRICS = (
    "requests",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "cost_micros",
    "unpriced_requests",
)


def _price() -> sa.types.TypeEngine[Any]:
    return sa.Numeric(18, 9).with_variant(sa.String(40), "sqlite")


def upgrade() -> None:
    create_schema(SCHEMA)
    # SQLite drops a foreign key whose target lies in another schema, even a translated-away one: there,
    # the tables are created schema-less so the cascade to tenants really exists.
    sqlite = op.get_bind().dialect.name == "sqlite"
    schema = None if sqlite else SCHEMA
    tenants_id = "tenants.id" if sqlite else "tenants.tenants.id"
    op.create_table(
        "usage_hourly",
        sa.Column("tenant_id", sa.Uuid, nullable=False),
        sa.Column("hour", sa.BigInteger, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("api_key_id", sa.String(100), nullable=False),
        sa.Column("endpoint", sa.String(200), nullable=False),
        *(sa.Column(name, sa.BigInteger, nullable=False) for name in METRICS),
        sa.ForeignKeyConstraint(
            ["tenant_id"], [tenants_id], name="fk_usage_hourly_tenant_id", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "hour", "model", "api_key_id", "endpoint", name="pk_usage_hourly"
        ),
        schema=schema,
    )
    op.create_table(
        "flush_state",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("cursor_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_flush_state"),
        schema=schema,
    )
    op.create_table(
        "price_overrides",
        sa.Column("id", sa.Uuid, nullable=False),
        sa.Column("tenant_id", sa.Uuid, nullable=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("input_per_mtok", _price(), nullable=False),
        sa.Column("cached_input_per_mtok", _price(), nullable=True),
        sa.Column("output_per_mtok", _price(), nullable=False),
        sa.Column("per_request", _price(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], [tenants_id], name="fk_price_overrides_tenant_id", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_price_overrides"),
        schema=schema,
    )
    op.create_index(
        "ix_price_overrides_tenant_model",
        "price_overrides",
        ["tenant_id", "model"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text("tenant_id IS NOT NULL"),
        sqlite_where=sa.text("tenant_id IS NOT NULL"),
    )
    op.create_index(
        "ix_price_overrides_global_model",
        "price_overrides",
        ["model"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text("tenant_id IS NULL"),
        sqlite_where=sa.text("tenant_id IS NULL"),
    )


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    schema = None if sqlite else SCHEMA
    op.drop_index("ix_price_overrides_global_model", table_name="price_overrides", schema=schema)
    op.drop_index("ix_price_overrides_tenant_model", table_name="price_overrides", schema=schema)
    op.drop_table("price_overrides", schema=schema)
    op.drop_table("flush_state", schema=schema)
    op.drop_table("usage_hourly", schema=schema)
    drop_schema(SCHEMA)
