"""Storage of flag sets: every SQL decision once, over a sync ``Connection``; the async repository runs the
same functions through ``AsyncConnection.run_sync``.

A write first bumps its set's version (``UPDATE ... RETURNING``: the row lock on PostgreSQL, the write lock
on SQLite), so writes to one set are serialised; it then checks the whole set as it would be after the
write (dependencies, segments) and raises before anything is written when it would not hold. A failed
check rolls the bump back with the transaction: nothing half-written.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from ._models import (
    CLIENT_MODE,
    Feature,
    FeatureSet,
    Flag,
    Segment,
    as_feature,
    check_consistency,
    children_of,
)
from ._tables import DEFAULT_SET, flag_sets_table, flags_table, segments_table

R = TypeVar("R")


class FlagNotFound(KeyError):
    """No flag (or segment) of that key in the set."""


class VersionConflict(Exception):
    """The flag changed since the version the writer read (``expected_version``)."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        super().__init__(f"{key}: expected version {expected}, found {actual}")
        self.key, self.expected, self.actual = key, expected, actual


class InvalidFlagSet(ValueError):
    """The write would leave the set inconsistent (a dependency or segment that does not exist, ...)."""


@dataclass(frozen=True, slots=True)
class StoredFlag:
    feature: Feature
    version: int
    created_at: datetime
    updated_at: datetime
    updated_by: str | None

    @property
    def key(self) -> str:
        return self.feature.name


@dataclass(frozen=True, slots=True)
class StoredSegment:
    segment: Segment
    version: int
    created_at: datetime
    updated_at: datetime
    updated_by: str | None


@dataclass(frozen=True, slots=True)
class StoredSet:
    """A whole flag set as stored, with its version token ``"<epoch>:<version>"``."""

    name: str
    epoch: str
    version: int
    flags: tuple[StoredFlag, ...]
    segments: tuple[StoredSegment, ...]

    @property
    def token(self) -> str:
        return set_token(self.epoch, self.version)

    def feature_set(self) -> FeatureSet:
        return FeatureSet(
            features=tuple(f.feature for f in self.flags), segments=tuple(s.segment for s in self.segments)
        )


def set_token(epoch: str, version: int) -> str:
    """The version of a set as every process names it: the epoch tells a recreated database apart."""
    return f"{epoch}:{version}"


# -- reading


def _utc(when: datetime) -> datetime:
    # SQLite hands timestamps back without their zone; they were written in UTC.
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _stored_flag(row: Any) -> StoredFlag:
    # Stored definitions were validated when written; read them as the client API would, so a definition
    # rule tightened later never makes a stored flag unreadable.
    feature = Feature.model_validate(row.definition, context=CLIENT_MODE)
    return StoredFlag(feature, row.version, _utc(row.created_at), _utc(row.updated_at), row.updated_by)


def _stored_segment(row: Any) -> StoredSegment:
    segment = Segment.model_validate(row.definition, context=CLIENT_MODE)
    return StoredSegment(segment, row.version, _utc(row.created_at), _utc(row.updated_at), row.updated_by)


def read_token(conn: Connection, set_name: str) -> str | None:
    row = conn.execute(
        sa.select(flag_sets_table.c.epoch, flag_sets_table.c.version).where(
            flag_sets_table.c.name == set_name
        )
    ).first()
    return None if row is None else set_token(row.epoch, row.version)


def load_set(conn: Connection, set_name: str) -> StoredSet:
    """The whole set (an empty set of version 0 when it was never written)."""
    head = conn.execute(sa.select(flag_sets_table).where(flag_sets_table.c.name == set_name)).first()
    flags = conn.execute(
        sa.select(flags_table).where(flags_table.c.set_name == set_name).order_by(flags_table.c.key)
    ).all()
    segments = conn.execute(
        sa.select(segments_table).where(segments_table.c.set_name == set_name).order_by(segments_table.c.id)
    ).all()
    return StoredSet(
        set_name,
        head.epoch if head is not None else "",
        head.version if head is not None else 0,
        tuple(_stored_flag(r) for r in flags),
        tuple(_stored_segment(r) for r in segments),
    )


def get_flag(conn: Connection, set_name: str, key: str) -> StoredFlag | None:
    row = conn.execute(
        sa.select(flags_table).where(flags_table.c.set_name == set_name, flags_table.c.key == key)
    ).first()
    return None if row is None else _stored_flag(row)


# -- writing


def _bump(conn: Connection, set_name: str, updated_by: str | None, now: datetime) -> None:
    table = flag_sets_table
    bumped = conn.execute(
        sa.update(table)
        .where(table.c.name == set_name)
        .values(version=table.c.version + 1, updated_at=now, updated_by=updated_by)
        .returning(table.c.version)
    ).first()
    if bumped is None:
        conn.execute(
            sa.insert(table).values(
                name=set_name,
                epoch=uuid.uuid4().hex,
                version=1,
                created_at=now,
                updated_at=now,
                updated_by=updated_by,
            )
        )


def _check(key: str, expected: int | None, current: int) -> None:
    if expected is not None and expected != current:
        raise VersionConflict(key, expected, current)


def _consistent(features: builtins.list[Feature], segments: builtins.list[Segment]) -> None:
    try:
        check_consistency(features, segments)
    except ValueError as exc:
        raise InvalidFlagSet(str(exc)) from None


def put_flag(
    conn: Connection, set_name: str, feature: Feature, updated_by: str | None, expected_version: int | None
) -> tuple[StoredFlag, StoredSet]:
    now = datetime.now(UTC)
    _bump(conn, set_name, updated_by, now)
    current = load_set(conn, set_name)
    existing = next((f for f in current.flags if f.key == feature.name), None)
    _check(feature.name, expected_version, existing.version if existing else 0)
    features = [f.feature for f in current.flags if f.key != feature.name] + [feature]
    _consistent(features, [s.segment for s in current.segments])
    definition = feature.unleash()
    if existing is None:
        version = 1
        conn.execute(
            sa.insert(flags_table).values(
                set_name=set_name,
                key=feature.name,
                definition=definition,
                version=1,
                created_at=now,
                updated_at=now,
                updated_by=updated_by,
            )
        )
    else:
        version = existing.version + 1
        conn.execute(
            sa.update(flags_table)
            .where(flags_table.c.set_name == set_name, flags_table.c.key == feature.name)
            .values(definition=definition, version=version, updated_at=now, updated_by=updated_by)
        )
    created = existing.created_at if existing else now
    return StoredFlag(feature, version, created, now, updated_by), load_set(conn, set_name)


def delete_flag(
    conn: Connection, set_name: str, key: str, updated_by: str | None, expected_version: int | None
) -> StoredSet:
    now = datetime.now(UTC)
    _bump(conn, set_name, updated_by, now)
    current = load_set(conn, set_name)
    existing = next((f for f in current.flags if f.key == key), None)
    if existing is None:
        raise FlagNotFound(key)
    _check(key, expected_version, existing.version)
    dependents = children_of(key, (f.feature for f in current.flags))
    if dependents:
        raise InvalidFlagSet(f"{key}: other flags depend on it: {', '.join(sorted(dependents))}")
    conn.execute(sa.delete(flags_table).where(flags_table.c.set_name == set_name, flags_table.c.key == key))
    return load_set(conn, set_name)


def put_segment(conn: Connection, set_name: str, segment: Segment, updated_by: str | None) -> StoredSet:
    now = datetime.now(UTC)
    _bump(conn, set_name, updated_by, now)
    current = load_set(conn, set_name)
    existing = next((s for s in current.segments if s.segment.id == segment.id), None)
    values = {"definition": segment.unleash(), "updated_at": now, "updated_by": updated_by}
    if existing is None:
        conn.execute(
            sa.insert(segments_table).values(
                set_name=set_name, id=segment.id, version=1, created_at=now, **values
            )
        )
    else:
        conn.execute(
            sa.update(segments_table)
            .where(segments_table.c.set_name == set_name, segments_table.c.id == segment.id)
            .values(version=existing.version + 1, **values)
        )
    return load_set(conn, set_name)


def delete_segment(conn: Connection, set_name: str, segment_id: int, updated_by: str | None) -> StoredSet:
    now = datetime.now(UTC)
    _bump(conn, set_name, updated_by, now)
    current = load_set(conn, set_name)
    if not any(s.segment.id == segment_id for s in current.segments):
        raise FlagNotFound(str(segment_id))
    users = [f.key for f in current.flags if any(segment_id in s.segments for s in f.feature.strategies)]
    if users:
        raise InvalidFlagSet(f"segment {segment_id} is used by {', '.join(users)}")
    conn.execute(
        sa.delete(segments_table).where(
            segments_table.c.set_name == set_name, segments_table.c.id == segment_id
        )
    )
    return load_set(conn, set_name)


def _definition(flag: Feature | Flag) -> Feature:
    """A definition as written: re-validated strictly, whichever mode built it (``FeatureSet.from_unleash``
    keeps what a write must refuse)."""
    feature = as_feature(flag)
    if not isinstance(feature, Feature):
        raise TypeError(f"expected a Feature or a Flag, got {type(flag).__name__}")
    return Feature.model_validate(feature.unleash())


# -- shells


class FlagRepository:
    """Flag sets in the database (sync). No caching: a ``FlagsClient`` serves evaluations."""

    def __init__(self, engine: Engine, set_name: str = DEFAULT_SET) -> None:
        self.engine = engine
        self.set_name = set_name

    def _read(self, fn: Callable[..., R], *args: Any) -> R:
        with self.engine.connect() as conn:
            return fn(conn, self.set_name, *args)

    def _write(self, fn: Callable[..., R], *args: Any) -> R:
        with self.engine.begin() as conn:
            return fn(conn, self.set_name, *args)

    def token(self) -> str | None:
        return self._read(read_token)

    def load(self) -> StoredSet:
        return self._read(load_set)

    def get(self, key: str) -> StoredFlag | None:
        return self._read(get_flag, key)

    def list(self) -> builtins.list[StoredFlag]:
        return builtins.list(self.load().flags)

    def put(
        self, flag: Feature | Flag, *, updated_by: str | None = None, expected_version: int | None = None
    ) -> tuple[StoredFlag, StoredSet]:
        """Create or replace a flag: ``ValidationError`` (pydantic) for a bad definition, ``InvalidFlagSet``
        when the set would not hold, ``VersionConflict`` when ``expected_version`` (0: must not exist) is
        not the stored one. Returns the stored flag and the whole set after the write."""
        return self._write(put_flag, _definition(flag), updated_by, expected_version)

    def delete(
        self, key: str, *, updated_by: str | None = None, expected_version: int | None = None
    ) -> StoredSet:
        return self._write(delete_flag, key, updated_by, expected_version)

    def put_segment(self, segment: Segment, *, updated_by: str | None = None) -> StoredSet:
        return self._write(put_segment, Segment.model_validate(segment.unleash()), updated_by)

    def delete_segment(self, segment_id: int, *, updated_by: str | None = None) -> StoredSet:
        return self._write(delete_segment, segment_id, updated_by)


class AsyncFlagRepository:
    """Flag sets in the database (asyncio), the same SQL run through ``run_sync``."""

    def __init__(self, engine: AsyncEngine, set_name: str = DEFAULT_SET) -> None:
        self.engine = engine
        self.set_name = set_name

    async def _read(self, fn: Callable[..., R], *args: Any) -> R:
        async with self.engine.connect() as conn:
            return await conn.run_sync(fn, self.set_name, *args)

    async def _write(self, fn: Callable[..., R], *args: Any) -> R:
        async with self.engine.begin() as conn:
            return await conn.run_sync(fn, self.set_name, *args)

    async def token(self) -> str | None:
        return await self._read(read_token)

    async def load(self) -> StoredSet:
        return await self._read(load_set)

    async def get(self, key: str) -> StoredFlag | None:
        return await self._read(get_flag, key)

    async def list(self) -> builtins.list[StoredFlag]:
        return builtins.list((await self.load()).flags)

    async def put(
        self, flag: Feature | Flag, *, updated_by: str | None = None, expected_version: int | None = None
    ) -> tuple[StoredFlag, StoredSet]:
        """See :meth:`FlagRepository.put`."""
        return await self._write(put_flag, _definition(flag), updated_by, expected_version)

    async def delete(
        self, key: str, *, updated_by: str | None = None, expected_version: int | None = None
    ) -> StoredSet:
        return await self._write(delete_flag, key, updated_by, expected_version)

    async def put_segment(self, segment: Segment, *, updated_by: str | None = None) -> StoredSet:
        return await self._write(put_segment, Segment.model_validate(segment.unleash()), updated_by)

    async def delete_segment(self, segment_id: int, *, updated_by: str | None = None) -> StoredSet:
        return await self._write(delete_segment, segment_id, updated_by)
