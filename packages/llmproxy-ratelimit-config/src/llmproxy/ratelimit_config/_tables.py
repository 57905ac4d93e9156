"""SQLAlchemy tables of the ``configuration`` schema (SQLite translates the schema away)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from llmproxy.core import metadata, tenant_id_column

from ._models import MAX_MODEL_LENGTH

SCHEMA = "configuration"

#: ``spend_budgets.api_key_id`` of the tenant's own budgets (no API key id is empty)
TENANT_BUDGETS = ""

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


def _configuration_id() -> sa.Column[Any]:
    return sa.Column(
        "configuration_id",
        sa.Uuid,
        sa.ForeignKey(f"{SCHEMA}.tenant_ratelimit_configurations.id", ondelete="CASCADE"),
        nullable=False,
    )


model_limits_table = sa.Table(
    "model_limits",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    _configuration_id(),
    sa.Column("model", sa.String(MAX_MODEL_LENGTH), nullable=False),
    # NULL: that one is not limited
    sa.Column("requests_per_minute", sa.BigInteger, nullable=True),
    sa.Column("tokens_per_minute", sa.BigInteger, nullable=True),
    sa.Column("tokens_per_day", sa.BigInteger, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint(
        "requests_per_minute >= 0 AND tokens_per_minute >= 0 AND tokens_per_day >= 0", name="non_negative"
    ),
    sa.Index("ix_model_limits_config_model", "configuration_id", "model", unique=True),
    schema=SCHEMA,
)

spend_budgets_table = sa.Table(
    "spend_budgets",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    _configuration_id(),
    # TENANT_BUDGETS ('') for the tenant's own budgets: NOT NULL, so the unique index holds for them too
    # (NULLs are distinct in a unique index).
    sa.Column("api_key_id", sa.String(MAX_MODEL_LENGTH), nullable=False),
    sa.Column("period", sa.String(10), nullable=False),
    sa.Column("limit_micros", sa.BigInteger, nullable=False),
    sa.Column("soft_threshold_percent", sa.SmallInteger, nullable=False),
    sa.Column("utc_offset_hours", sa.SmallInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("limit_micros >= 0", name="limit_micros_non_negative"),
    sa.CheckConstraint("period IN ('day', 'month')", name="period"),
    sa.Index("ix_spend_budgets_config_key_period", "configuration_id", "api_key_id", "period", unique=True),
    schema=SCHEMA,
)

api_key_model_allowlists_table = sa.Table(
    "api_key_model_allowlists",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    _configuration_id(),
    sa.Column("api_key_id", sa.String(MAX_MODEL_LENGTH), nullable=False),
    # a JSON list of model names, sorted; [] is "no model allowed" (a key without a row may call every model)
    sa.Column("models", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_api_key_model_allowlists_config_key", "configuration_id", "api_key_id", unique=True),
    schema=SCHEMA,
)
