"""per-tenant rate-limit configurations and endpoint limits; default rows for existing tenants

Revision ID: ratelimit_config_0001
Revises:
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from llmproxy.core import create_schema, drop_schema

revision = "ratelimit_config_0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "configuration"

# The defaults as they were when this migration was written. Frozen here on purpose: a migration must do
# the same thing whenever it runs, whatever the package's configurable defaults say later.
_SEED_GLOBAL = {
    "global_requests_per_minute": 1000,
    "global_requests_per_day": 100_000,
    "global_tokens_per_minute": 100_000,
    "global_tokens_per_day": 10_000_000,
    "api_key_requests_per_minute": 100,
    "api_key_tokens_per_minute": 10_000,
}
_SEED_ENDPOINTS = {
    "/v1/chat/completions": (60, 100_000, 120),
    "/v1/embeddings": (1000, 500_000, 2000),
}


def _qualified(schema: str | None, column: str) -> str:
    return f"{schema}.{column}" if schema else column


def upgrade() -> None:
    create_schema(SCHEMA)
    # SQLite drops a foreign key whose target lies in another schema, even a translated-away one: there,
    # create the table schema-less so the cascade to tenants really exists.
    sqlite = op.get_bind().dialect.name == "sqlite"
    schema = None if sqlite else SCHEMA
    tenants_id = _qualified(None if sqlite else "tenants", "tenants.id")
    configurations = op.create_table(
        "tenant_ratelimit_configurations",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("tenant_id", sa.Uuid, nullable=False),
        *(sa.Column(name, sa.BigInteger, nullable=False) for name in _SEED_GLOBAL),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            [tenants_id],
            name="fk_tenant_ratelimit_configurations_tenant_id_tenants",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_tenant_ratelimit_configurations"),
        schema=schema,
    )
    op.create_index(
        "ix_tenant_ratelimit_configurations_tenant_id",
        "tenant_ratelimit_configurations",
        ["tenant_id"],
        unique=True,
        schema=schema,
    )
    endpoints = op.create_table(
        "endpoint_limits",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("configuration_id", sa.Uuid, nullable=False),
        sa.Column("endpoint_path", sa.String(500), nullable=False),
        sa.Column("requests_per_minute", sa.BigInteger, nullable=False),
        sa.Column("tokens_per_minute", sa.BigInteger, nullable=False),
        sa.Column("burst_capacity", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["configuration_id"],
            [_qualified(schema, "tenant_ratelimit_configurations.id")],
            name="fk_endpoint_limits_configuration_id",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_endpoint_limits"),
        schema=schema,
    )
    op.create_index(
        "ix_endpoint_limits_config_path",
        "endpoint_limits",
        ["configuration_id", "endpoint_path"],
        unique=True,
        schema=schema,
    )
    _seed_existing_tenants(configurations, endpoints)


def _seed_existing_tenants(configurations: sa.Table, endpoints: sa.Table) -> None:
    bind = op.get_bind()
    # A full Table (not sa.table()) so SQLite's schema translation applies to it.
    tenants = sa.Table("tenants", sa.MetaData(), sa.Column("id", sa.Uuid, primary_key=True), schema="tenants")
    tenant_ids = [row.id for row in bind.execute(sa.select(tenants.c.id))]
    if not tenant_ids:
        return
    now = datetime.now(UTC)
    config_rows = []
    endpoint_rows = []
    for tenant_id in tenant_ids:
        config_id = uuid.uuid4()
        config_rows.append(
            {"id": config_id, "tenant_id": tenant_id, **_SEED_GLOBAL, "created_at": now, "updated_at": now}
        )
        for path, (rpm, tpm, burst) in _SEED_ENDPOINTS.items():
            endpoint_rows.append(
                {
                    "id": uuid.uuid4(),
                    "configuration_id": config_id,
                    "endpoint_path": path,
                    "requests_per_minute": rpm,
                    "tokens_per_minute": tpm,
                    "burst_capacity": burst,
                    "created_at": now,
                }
            )
    op.bulk_insert(configurations, config_rows)
    op.bulk_insert(endpoints, endpoint_rows)


def downgrade() -> None:
    op.drop_index("ix_endpoint_limits_config_path", table_name="endpoint_limits", schema=SCHEMA)
    op.drop_table("endpoint_limits", schema=SCHEMA)
    op.drop_index(
        "ix_tenant_ratelimit_configurations_tenant_id",
        table_name="tenant_ratelimit_configurations",
        schema=SCHEMA,
    )
    op.drop_table("tenant_ratelimit_configurations", schema=SCHEMA)
    drop_schema(SCHEMA)
