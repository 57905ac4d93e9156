"""SQLAlchemy tables of the ``configuration`` schema (SQLite translates the schema away)."""

from __future__ import annotations

import sqlalchemy as sa

from llmproxy.core import metadata, tenant_id_column

SCHEMA = "configuration"

configurations_table = sa.Table(
    "tenant_ratelimit_configurations",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    tenant_id_column(),
    sa.Column("global_requests_per_minute", sa.BigInteger, nullable=False),
    sa.Column("global_requests_per_day", sa.BigInteger, nullable=False),
    sa.Column("global_tokens_per_minute", sa.BigInteger, nullable=False),
    sa.Column("global_tokens_per_day", sa.BigInteger, nullable=False),
    sa.Column("api_key_requests_per_minute", sa.BigInteger, nullable=False),
    sa.Column("api_key_tokens_per_minute", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_tenant_ratelimit_configurations_tenant_id", "tenant_id", unique=True),
    schema=SCHEMA,
)

endpoint_limits_table = sa.Table(
    "endpoint_limits",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column(
        "configuration_id",
        sa.Uuid,
        sa.ForeignKey(f"{SCHEMA}.tenant_ratelimit_configurations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("endpoint_path", sa.String(500), nullable=False),
    sa.Column("requests_per_minute", sa.BigInteger, nullable=False),
    sa.Column("tokens_per_minute", sa.BigInteger, nullable=False),
    sa.Column("burst_capacity", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_endpoint_limits_config_path", "configuration_id", "endpoint_path", unique=True),
    schema=SCHEMA,
)
