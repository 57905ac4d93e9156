"""How every process keeps the whole flag set, sans I/O: load, refresh, poll, write, written once as flows
(core's ``Flow``) that the sync and async clients only perform.

- Redis holds the serialized snapshot (``llmproxy:{flags}:<set>:snapshot``, a hash of epoch, version and
  body) and the newest version anyone has seen (``llmproxy:{flags}:<set>:version``); a cold start reads
  both and skips the database when they agree.
- A write goes to the database, then fills the cache and publishes the new version on
  ``llmproxy:{flags}:<set>:changes``; every subscriber whose version differs refreshes (one Redis read).
- The version key is polled (default every 15 s) in case a message was lost; while Redis is unreachable the
  database's version is polled instead, so changes still arrive.
- Any failure keeps the snapshot being served, is logged and counted, and is retried with backoff.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final, Literal, TypeAlias

from pydantic import Field, ValidationError

from llmproxy.core import Clock, Flow, Options

from ._models import Feature, FeatureSet, Flag, Segment, as_feature
from ._repository import StoredFlag, StoredSet, set_token
from ._snapshot import Snapshot
from ._tables import DEFAULT_SET

logger = logging.getLogger("llmproxy.flags")

Source: TypeAlias = Literal["defaults", "redis", "database", "redis-stale"]
FILL_SCRIPT: Final = resources.files(__package__).joinpath("scripts", "fill.lua").read_text("utf-8")


class FlagsOptions(Options):
    """Options of a flags client (keyword overrides of these are accepted too)."""

    set_name: str = Field(DEFAULT_SET, min_length=1, max_length=100)
    #: How often the version key is checked for a change whose message was lost (seconds).
    poll_interval: float = Field(15.0, gt=0, le=3600)
    #: How long ``start()`` waits for the first load before serving the last good snapshot or the defaults.
    startup_timeout: float = Field(2.0, ge=0, le=300)
    #: Life of the cached snapshot and version key in Redis; every load from the database renews it.
    redis_ttl: int = Field(7 * 24 * 3600, ge=60)
    #: Backoff between retries after a failure: doubles from ``retry_min`` up to ``retry_max`` seconds.
    retry_min: float = Field(0.1, gt=0)
    retry_max: float = Field(5.0, gt=0)
    #: Added under every context (e.g. ``{"environment": "prod", "appName": "gateway"}``).
    static_context: dict[str, str] = Field(default_factory=dict)
    #: Subscribe to change messages (off: rely on polling alone).
    subscribe: bool = True
    #: The host name ``applicationHostname`` strategies compare with (default: this machine's).
    hostname: str | None = None


def keys(set_name: str) -> tuple[str, str, str]:
    """``(snapshot key, version key, channel)``. The ``{flags}`` hash tag keeps both keys in one Cluster slot
    (the fill script touches both); the set is global, so it is not tenant-tagged."""
    base = f"llmproxy:{{flags}}:{set_name}"
    return f"{base}:snapshot", f"{base}:version", f"{base}:changes"


# -- operations a flow asks for ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RedisRead:
    """``GET version_key`` and ``HMGET snapshot_key epoch version body`` in one round trip ->
    ``(token | None, (epoch, version, body) | (None, None, None))``."""

    version_key: str
    snapshot_key: str


@dataclass(frozen=True, slots=True)
class RedisVersion:
    """``GET version_key`` -> token or None."""

    version_key: str


@dataclass(frozen=True, slots=True)
class RedisFill:
    """Run ``FILL_SCRIPT``."""

    snapshot_key: str
    version_key: str
    epoch: str
    version: int
    body: str
    ttl: int


@dataclass(frozen=True, slots=True)
class RedisPublish:
    channel: str
    message: str


@dataclass(frozen=True, slots=True)
class DbLoad:
    """The whole stored set -> ``StoredSet``."""


@dataclass(frozen=True, slots=True)
class DbToken:
    """The stored set's version token -> str or None."""


@dataclass(frozen=True, slots=True)
class DbPut:
    flag: Feature | Flag
    updated_by: str | None
    expected_version: int | None


@dataclass(frozen=True, slots=True)
class DbDelete:
    key: str
    updated_by: str | None
    expected_version: int | None


@dataclass(frozen=True, slots=True)
class DbPutSegment:
    segment: Segment
    updated_by: str | None


@dataclass(frozen=True, slots=True)
class DbDeleteSegment:
    segment_id: int
    updated_by: str | None


Operation: TypeAlias = (
    RedisRead
    | RedisVersion
    | RedisFill
    | RedisPublish
    | DbLoad
    | DbToken
    | DbPut
    | DbDelete
    | DbPutSegment
    | DbDeleteSegment
)


# -- state ---------------------------------------------------------------------------------------------------


@dataclass
class FlagsStats:
    """Counters since the client started."""

    loads_database: int = 0
    loads_redis: int = 0
    refreshes_unchanged: int = 0
    snapshots_swapped: int = 0
    messages_received: int = 0
    polls: int = 0
    redis_errors: int = 0
    database_errors: int = 0
    corrupt_cache_entries: int = 0
    publishes_pending: int = 0
    last_error: str | None = None


@dataclass(frozen=True)
class FlagsStatus:
    """What is being served and why. ``ready`` is true once a load from the database or from a current
    Redis cache has succeeded; until then the snapshot is the code defaults or a stale cached one."""

    ready: bool
    source: Source
    version: str
    reason: str | None = None
    since: float = field(default_factory=time.time)


class _Backoff:
    __slots__ = ("delay", "high", "low", "until")

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high
        self.delay, self.until = low, 0.0

    def allows(self, now: float) -> bool:
        return now >= self.until

    def failed(self, now: float) -> None:
        self.until = now + self.delay
        self.delay = min(self.delay * 2, self.high)

    def succeeded(self) -> None:
        self.delay, self.until = self.low, 0.0


def encode(stored: StoredSet) -> str:
    return json.dumps(stored.feature_set().unleash(), separators=(",", ":"), ensure_ascii=False)


def _older(token: str, than: str | None) -> bool:
    """Is ``token`` an older version of the same epoch than ``than``?"""
    if than is None:
        return False
    epoch, _, version = token.rpartition(":")
    their_epoch, _, their_version = than.rpartition(":")
    return (
        epoch == their_epoch
        and version.isdigit()
        and their_version.isdigit()
        and int(version) < int(their_version)
    )


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class Distributor:
    """One client's distribution state and its flows. ``install`` receives every new snapshot."""

    def __init__(
        self,
        options: FlagsOptions,
        defaults: Iterable[Feature | Flag],
        clock: Clock,
        install: Callable[[Snapshot], object],
    ) -> None:
        self.options = options
        self.clock = clock
        self.defaults = tuple(as_feature(f) for f in defaults)
        self.snapshot_key, self.version_key, self.channel = keys(options.set_name)
        self.install = install
        self.stats = FlagsStats()
        self.token: str | None = None
        self.status = FlagsStatus(False, "defaults", "", "not loaded yet")
        self.refresh_due = True
        self.next_poll = 0.0
        self._redis = _Backoff(options.retry_min, options.retry_max)
        self._refresh = _Backoff(options.retry_min, options.retry_max)
        self._pending: StoredSet | None = None  # a write whose fill/publish failed, to send again
        self._pending_retry = _Backoff(options.retry_min, options.retry_max)

    def initial_snapshot(self) -> Snapshot:
        return self._compile(FeatureSet(features=self.defaults), "")

    # -- compiling

    def _compile(self, feature_set: FeatureSet, version: str) -> Snapshot:
        """The stored set, with the code defaults under it for keys it does not define."""
        stored = {f.name for f in feature_set.features}
        extra = tuple(f for f in self.defaults if f.name not in stored)
        if extra:
            feature_set = feature_set.model_copy(update={"features": feature_set.features + extra})
        return Snapshot(feature_set, version, hostname=self.options.hostname)

    def _accept(self, token: str, feature_set: FeatureSet, source: Source, *, ready: bool = True) -> None:
        if _older(token, self.token):
            self.refresh_due = False
            return  # never go back to an older version of the same database (a lagging read)
        self.install(self._compile(feature_set, token))
        self.token = token
        self.stats.snapshots_swapped += 1
        if source == "database":
            self.stats.loads_database += 1
        elif source == "redis":
            self.stats.loads_redis += 1
        reason = None if ready else self.status.reason
        self.status = FlagsStatus(ready or self.status.ready, source, token, reason)
        self.refresh_due = False
        self.next_poll = self.clock.monotonic() + self.options.poll_interval
        self._refresh.succeeded()

    # -- failures

    def _failed(self, what: Literal["redis", "database"], exc: BaseException, doing: str) -> None:
        now = self.clock.monotonic()
        message = f"{type(exc).__name__}: {exc}"
        self.stats.last_error = f"{what} while {doing}: {message}"
        if what == "redis":
            self.stats.redis_errors += 1
            self._redis.failed(now)
        else:
            self.stats.database_errors += 1
        logger.warning(
            "flags: %s unavailable while %s (%s); serving version %r", what, doing, message, self.token
        )

    def redis_usable(self) -> bool:
        return self._redis.allows(self.clock.monotonic())

    def redis_recovered(self) -> None:
        self._redis.succeeded()

    # -- what the background loop should do next

    def wants_refresh(self) -> bool:
        return self.refresh_due and self._refresh.allows(self.clock.monotonic())

    def wants_poll(self) -> bool:
        return self.clock.monotonic() >= self.next_poll

    def wants_republish(self) -> bool:
        return self._pending is not None and self._pending_retry.allows(self.clock.monotonic())

    def on_message(self, data: bytes | str) -> None:
        self.stats.messages_received += 1
        if _text(data) != self.token:
            self.refresh_due = True

    def on_subscribed(self) -> None:
        # Messages sent while we were not listening are lost: check the version now.
        self.refresh_due = True

    def startup_expired(self, timeout: float) -> None:
        if not self.status.ready:
            reason = f"no successful load within {timeout:g} s ({self.stats.last_error or 'still loading'})"
            self.status = FlagsStatus(False, self.status.source, self.status.version, reason)
            logger.warning("flags: serving %s: %s", self.status.source, reason)

    # -- flows

    def refresh_flow(self) -> Flow[Operation, bool]:
        """Bring the snapshot up to date: Redis first, the database when Redis does not have the current
        version; True when a new snapshot was installed."""
        cached_body: str | None = None
        cached_token: str | None = None
        if self.redis_usable():
            try:
                token, (epoch, version, body) = yield RedisRead(self.version_key, self.snapshot_key)
            except Exception as exc:
                self._failed("redis", exc, "reading the flag set")
            else:
                self._redis.succeeded()
                token, body = _text(token), _text(body)
                if epoch is not None and version is not None and body is not None:
                    cached_token, cached_body = set_token(_text(epoch) or "", int(version)), body
                if token is not None and token == self.token:
                    self._unchanged()
                    return False
                # (A version key older than what we serve means Redis missed a write: ask the database.)
                if (
                    token is not None
                    and token == cached_token
                    and cached_body is not None
                    and not _older(token, self.token)
                ):
                    feature_set = self._decode(cached_body)
                    if feature_set is not None:
                        self._accept(token, feature_set, "redis")
                        return True
        try:
            stored: StoredSet = yield DbLoad()
        except Exception as exc:
            self._failed("database", exc, "loading the flag set")
            self._refresh.failed(self.clock.monotonic())
            if self.token is None and cached_body is not None and cached_token is not None:
                # Better than code defaults: the last set anyone cached, even if a newer one exists.
                feature_set = self._decode(cached_body)
                if feature_set is not None:
                    self._accept(cached_token, feature_set, "redis-stale", ready=False)
                    self.refresh_due = True  # keep trying for the current one
                    return True
            return False
        installed = stored.token != self.token
        if installed:
            self._accept(stored.token, stored.feature_set(), "database")
        else:
            self._unchanged()
        yield from self._fill_flow(stored)
        return installed

    def _unchanged(self) -> None:
        self.stats.refreshes_unchanged += 1
        self.refresh_due = False
        self.next_poll = self.clock.monotonic() + self.options.poll_interval
        if not self.status.ready:
            self.status = FlagsStatus(True, self.status.source, self.status.version, None)
        self._refresh.succeeded()

    def _decode(self, body: str) -> FeatureSet | None:
        try:
            return FeatureSet.from_unleash(body)
        except (ValueError, ValidationError) as exc:
            self.stats.corrupt_cache_entries += 1
            logger.warning("flags: the cached snapshot is not a flag set (ignored): %s", exc)
            return None

    def _fill_flow(self, stored: StoredSet) -> Flow[Operation, bool]:
        if not self.redis_usable():
            return False
        try:
            yield RedisFill(
                self.snapshot_key,
                self.version_key,
                stored.epoch,
                stored.version,
                encode(stored),
                self.options.redis_ttl,
            )
        except Exception as exc:
            self._failed("redis", exc, "caching the flag set")
            return False
        return True

    def poll_flow(self) -> Flow[Operation, bool]:
        """The fallback for lost messages: compare versions, refresh on a difference."""
        self.stats.polls += 1
        self.next_poll = self.clock.monotonic() + self.options.poll_interval
        token: str | None = None
        known = False
        if self.redis_usable():
            try:
                token = _text((yield RedisVersion(self.version_key)))
                known = True
            except Exception as exc:
                self._failed("redis", exc, "polling the flag set version")
        if not known or token is None:
            # Redis is away (or lost the key): the database knows the version too.
            try:
                token = yield DbToken()
            except Exception as exc:
                self._failed("database", exc, "polling the flag set version")
                return False
        if token != self.token:
            self.refresh_due = True
            return (yield from self.refresh_flow())
        return False

    def _published_flow(self, stored: StoredSet) -> Flow[Operation, None]:
        """After a write: serve it here at once, then cache it and tell everyone (retried if Redis fails)."""
        if stored.token != self.token:
            self._accept(stored.token, stored.feature_set(), "database")
        if not (yield from self._fill_flow(stored)):
            self._queue(stored)
            return
        try:
            yield RedisPublish(self.channel, stored.token)
        except Exception as exc:
            self._failed("redis", exc, "publishing a flag change")
            self._queue(stored)
            return
        if self._pending is not None and self._pending.version <= stored.version:
            self._pending = None
            self.stats.publishes_pending = 0
            self._pending_retry.succeeded()

    def _queue(self, stored: StoredSet) -> None:
        if self._pending is None or self._pending.version < stored.version:
            self._pending = stored
        self.stats.publishes_pending = 1
        self._pending_retry.failed(self.clock.monotonic())

    def republish_flow(self) -> Flow[Operation, None]:
        pending = self._pending
        if pending is not None:
            yield from self._published_flow(pending)

    def put_flow(
        self, flag: Feature | Flag, updated_by: str | None, expected_version: int | None
    ) -> Flow[Operation, StoredFlag]:
        result: tuple[StoredFlag, StoredSet] = yield DbPut(flag, updated_by, expected_version)
        yield from self._published_flow(result[1])
        return result[0]

    def delete_flow(
        self, key: str, updated_by: str | None, expected_version: int | None
    ) -> Flow[Operation, None]:
        stored: StoredSet = yield DbDelete(key, updated_by, expected_version)
        yield from self._published_flow(stored)

    def put_segment_flow(self, segment: Segment, updated_by: str | None) -> Flow[Operation, None]:
        stored: StoredSet = yield DbPutSegment(segment, updated_by)
        yield from self._published_flow(stored)

    def delete_segment_flow(self, segment_id: int, updated_by: str | None) -> Flow[Operation, None]:
        stored: StoredSet = yield DbDeleteSegment(segment_id, updated_by)
        yield from self._published_flow(stored)


def read_reply(reply: Any) -> tuple[Any, tuple[Any, Any, Any]]:
    """A ``RedisRead`` pipeline's ``[GET, HMGET]`` replies as ``(token, (epoch, version, body))``."""
    token, fields = reply
    epoch, version, body = fields
    return token, (epoch, version, body)
