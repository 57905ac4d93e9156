"""per-model limits, spend budgets (tenant and API key) and API keys' model allow-lists

Revision ID: ratelimit_config_0002
Revises: ratelimit_config_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "ratelimit_config_0002"
down_revision = "ratelimit_config_0001"
branch_labels = None
depends_on = None

SCHEMA = "configuration"
# Frozen here, like everything a migration creates: the model's limits may change later, this table may not.
_NAME_LENGTH = 200

# (table, index name, indexed columns), in creation order
_INDEXES = (
    ("model_limits", "ix_model_limits_config_model", ["configuration_id", "model"]),
    ("spend_budgets", "ix_spend_budgets_config_key_period", ["configuration_id", "api_key_id", "period"]),
    (
        "api_key_model_allowlists",
        "ix_api_key_model_allowlists_config_key",
        ["configuration_id", "api_key_id"],
    ),
)


def _create(table: str, schema: str | None, *items: sa.schema.SchemaItem) -> None:
    """A child table of the configurations: ``id``, ``configuration_id`` (cascading), items, created_at."""
    target = (
        f"{schema}.tenant_ratelimit_configurations.id" if schema else "tenant_ratelimit_configurations.id"
    )
    op.create_table(
        table,
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("configuration_id", sa.Uuid, nullable=False),
        *items,
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["configuration_id"], [target], name=f"fk_{table}_configuration_id", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
        schema=schema,
    )


def upgrade() -> None:
    # As in 0001: SQLite drops a foreign key whose target lies in another schema, even a translated-away
    # one, so there the tables are created schema-less and the cascade to the configurations really exists.
    schema = None if op.get_bind().dialect.name == "sqlite" else SCHEMA
    _create(
        "model_limits",
        schema,
        sa.Column("model", sa.String(_NAME_LENGTH), nullable=False),
        # NULL: that one is not limited
        sa.Column("requests_per_minute", sa.BigInteger, nullable=True),
        sa.Column("tokens_per_minute", sa.BigInteger, nullable=True),
        sa.Column("tokens_per_day", sa.BigInteger, nullable=True),
        sa.CheckConstraint(
            "requests_per_minute >= 0 AND tokens_per_minute >= 0 AND tokens_per_day >= 0",
            name="ck_model_limits_non_negative",
        ),
    )
    _create(
        "spend_budgets",
        schema,
        # '' for the tenant's own budgets (NOT NULL, so that the unique index holds for them too)
        sa.Column("api_key_id", sa.String(_NAME_LENGTH), nullable=False),
        sa.Column("period", sa.String(10), nullable=False),
        sa.Column("limit_micros", sa.BigInteger, nullable=False),
        sa.Column("soft_threshold_percent", sa.SmallInteger, nullable=False),
        sa.Column("utc_offset_hours", sa.SmallInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.CheckConstraint("limit_micros >= 0", name="ck_spend_budgets_limit_micros_non_negative"),
        sa.CheckConstraint("period IN ('day', 'month')", name="ck_spend_budgets_period"),
    )
    _create(
        "api_key_model_allowlists",
        schema,
        sa.Column("api_key_id", sa.String(_NAME_LENGTH), nullable=False),
        sa.Column("models", sa.JSON, nullable=False),
    )
    for table, name, columns in _INDEXES:
        op.create_index(name, table, columns, unique=True, schema=schema)


def downgrade() -> None:
    # Only this revision's tables: 0001's (and their rows) stay, and so does the schema.
    for table, name, _ in reversed(_INDEXES):
        op.drop_index(name, table_name=table, schema=SCHEMA)
        op.drop_table(table, schema=SCHEMA)
