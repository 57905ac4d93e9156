"""flag sets, flags and segments; the default flag set

Revision ID: flags_0001
Revises:
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from llmproxy.core import create_schema, drop_schema

revision = "flags_0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "flags"
# Frozen here on purpose (a migration must do the same thing whenever it runs).
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _audit() -> list[sa.Column[object]]:
    return [
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=True),
    ]


def upgrade() -> None:
    create_schema(SCHEMA)
    # On SQLite the schema is translated away; a foreign key naming it would be dropped, so name none there.
    sqlite = op.get_bind().dialect.name == "sqlite"
    schema = None if sqlite else SCHEMA
    sets_name = "flag_sets.name" if sqlite else f"{SCHEMA}.flag_sets.name"
    flag_sets = op.create_table(
        "flag_sets",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("epoch", sa.String(32), nullable=False),
        *_audit(),
        sa.PrimaryKeyConstraint("name", name="pk_flag_sets"),
        schema=schema,
    )
    for table, key, key_type in (("flags", "key", sa.String(200)), ("segments", "id", sa.Integer)):
        op.create_table(
            table,
            sa.Column("set_name", sa.String(100), nullable=False),
            sa.Column(key, key_type, nullable=False, autoincrement=False),
            sa.Column("definition", _JSON, nullable=False),
            *_audit(),
            sa.ForeignKeyConstraint(
                ["set_name"], [sets_name], name=f"fk_{table}_set_name", ondelete="CASCADE"
            ),
            sa.PrimaryKeyConstraint("set_name", key, name=f"pk_{table}"),
            schema=schema,
        )
    now = datetime.now(UTC)
    op.bulk_insert(
        flag_sets,
        [
            {
                "name": "default",
                "epoch": uuid.uuid4().hex,
                "version": 0,
                "created_at": now,
                "updated_at": now,
                "updated_by": "migration flags_0001",
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("segments", schema=SCHEMA)
    op.drop_table("flags", schema=SCHEMA)
    op.drop_table("flag_sets", schema=SCHEMA)
    drop_schema(SCHEMA)
