"""SQLAlchemy tables of the ``flags`` schema (SQLite translates the schema away).

A *flag set* is the unit every process holds as one snapshot; its ``version`` goes up by one with every
write to any of its flags or segments, and its ``epoch`` (random, set when the set is created) tells a
recreated database's versions from the old one's. Each flag and segment has its own version too.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from llmproxy.core import metadata

SCHEMA = "flags"
DEFAULT_SET = "default"

# JSONB on PostgreSQL (indexable, validated), JSON text elsewhere.
Definition = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _audit_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=True),
    ]


flag_sets_table = sa.Table(
    "flag_sets",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("epoch", sa.String(32), nullable=False),
    *_audit_columns(),
    schema=SCHEMA,
)

flags_table = sa.Table(
    "flags",
    metadata,
    sa.Column(
        "set_name",
        sa.String(100),
        sa.ForeignKey(f"{SCHEMA}.flag_sets.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("definition", Definition, nullable=False),
    *_audit_columns(),
    schema=SCHEMA,
)

segments_table = sa.Table(
    "segments",
    metadata,
    sa.Column(
        "set_name",
        sa.String(100),
        sa.ForeignKey(f"{SCHEMA}.flag_sets.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("definition", Definition, nullable=False),
    *_audit_columns(),
    schema=SCHEMA,
)
