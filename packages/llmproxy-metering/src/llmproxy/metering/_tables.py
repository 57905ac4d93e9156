"""SQLAlchemy tables of the ``metering`` schema (SQLite translates the schema away)."""

from __future__ import annotations

import sqlalchemy as sa

from llmproxy.core import metadata, tenant_id_column

SCHEMA = "metering"

#: Exact decimal prices: NUMERIC on PostgreSQL; text on SQLite, which has no exact decimal type.
PriceType = sa.Numeric(18, 9).with_variant(sa.String(40), "sqlite")

usage_hourly_table = sa.Table(
    "usage_hourly",
    metadata,
    tenant_id_column(),
    sa.Column("hour", sa.BigInteger, nullable=False),  # hours since the epoch (UTC)
    sa.Column("model", sa.String(200), nullable=False),  # "" when the events named none
    sa.Column("api_key_id", sa.String(100), nullable=False),
    sa.Column("endpoint", sa.String(200), nullable=False),
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("input_tokens", sa.BigInteger, nullable=False),
    sa.Column("output_tokens", sa.BigInteger, nullable=False),
    sa.Column("cached_input_tokens", sa.BigInteger, nullable=False),
    sa.Column("reasoning_tokens", sa.BigInteger, nullable=False),
    sa.Column("cost_micros", sa.BigInteger, nullable=False),
    sa.Column("unpriced_requests", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "hour", "model", "api_key_id", "endpoint", name="pk_usage_hourly"),
    schema=SCHEMA,
)

flush_state_table = sa.Table(
    "flush_state",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("cursor_ms", sa.BigInteger, nullable=False),  # Redis time up to which all activity is written
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    schema=SCHEMA,
)

price_overrides_table = sa.Table(
    "price_overrides",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("tenant_id", sa.Uuid, sa.ForeignKey("tenants.tenants.id", ondelete="CASCADE"), nullable=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("input_per_mtok", PriceType, nullable=False),
    sa.Column("cached_input_per_mtok", PriceType, nullable=True),
    sa.Column("output_per_mtok", PriceType, nullable=False),
    sa.Column("per_request", PriceType, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # NULLs are distinct in a unique index, so the global overrides (no tenant) get an index of their own.
    sa.Index(
        "ix_price_overrides_tenant_model",
        "tenant_id",
        "model",
        unique=True,
        postgresql_where=sa.text("tenant_id IS NOT NULL"),
        sqlite_where=sa.text("tenant_id IS NOT NULL"),
    ),
    sa.Index(
        "ix_price_overrides_global_model",
        "model",
        unique=True,
        postgresql_where=sa.text("tenant_id IS NULL"),
        sqlite_where=sa.text("tenant_id IS NULL"),
    ),
    schema=SCHEMA,
)
