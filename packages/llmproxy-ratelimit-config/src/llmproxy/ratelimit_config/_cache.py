"""The cache policy, sans I/O: L1 -> Redis -> database -> last known / defaults, and write invalidation.

A *flow* (``llmproxy.core.Flow``) is a generator that yields the I/O it needs (``RedisRead``, ``DbGet``, ...)
and is sent the result (or has the failure thrown into it). The sync and async services only perform those
operations, through core's ``run_flow`` / ``arun_flow``, so the policy below exists exactly once.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Literal, NamedTuple, TypeAlias

import cachetools
import pydantic

from llmproxy.core import Flow

from ._models import TenantRateLimitConfiguration

if TYPE_CHECKING:
    from ._options import RateLimitConfigOptions

logger = logging.getLogger("llmproxy.ratelimit_config")

KEY_PREFIX = "ratelimit:config:"
INVALIDATION_CHANNEL = "ratelimit:config:invalidations"
ALL_TENANTS = "*"

Source = Literal["l1", "redis", "database", "default", "last_known"]
SOURCES: tuple[Source, ...] = ("l1", "redis", "database", "default", "last_known")
LoadHook: TypeAlias = Callable[[uuid.UUID, Source], None]


def cache_key(tenant_id: uuid.UUID) -> str:
    """The Redis key of a tenant's cached configuration: ``ratelimit:config:{<tenant_id>}`` (hash-tagged)."""
    return f"{KEY_PREFIX}{{{tenant_id}}}"


def version_key(tenant_id: uuid.UUID) -> str:
    """Bumped by every write, so a reader never caches a value older than the write (same hash slot)."""
    return f"{KEY_PREFIX}{{{tenant_id}}}:version"


def _script(name: str) -> str:
    return resources.files(__package__).joinpath("scripts", name).read_text("utf-8")


FILL_SCRIPT = _script("fill.lua")
INVALIDATE_SCRIPT = _script("invalidate.lua")


# -- cache values


class CorruptEntry(ValueError):
    pass


def encode(config: TenantRateLimitConfiguration | None) -> str:
    """The cached value: the model's JSON, or ``null`` for "no row: this tenant gets the defaults"."""
    return "null" if config is None else config.model_dump_json()


def decode(raw: bytes | str, tenant_id: uuid.UUID) -> TenantRateLimitConfiguration | None:
    if raw in (b"null", "null"):
        return None
    try:
        config = TenantRateLimitConfiguration.model_validate_json(raw)
    except (ValueError, pydantic.ValidationError) as exc:
        raise CorruptEntry(f"not a configuration: {exc}") from exc
    if config.tenant_id != tenant_id:
        raise CorruptEntry(f"entry belongs to tenant {config.tenant_id}")
    return config


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def parse_invalidation(data: bytes | str) -> uuid.UUID | Literal["bad"] | None:
    """A tenant id, ``None`` for every tenant, or ``"bad"``."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if text == ALL_TENANTS:
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        return "bad"


# -- I/O operations a flow asks for


@dataclass(frozen=True, slots=True)
class RedisRead:
    """``MGET key version_key`` -> ``[value, version]``."""

    key: str
    version_key: str


@dataclass(frozen=True, slots=True)
class RedisFill:
    """Run ``FILL_SCRIPT``: set ``key`` unless the version moved since ``seen_version``."""

    key: str
    version_key: str
    seen_version: str
    value: str
    ttl: int


@dataclass(frozen=True, slots=True)
class RedisInvalidate:
    """Run ``INVALIDATE_SCRIPT``: set a new version token, delete the entry."""

    key: str
    version_key: str
    token: str
    ttl: int


@dataclass(frozen=True, slots=True)
class RedisPublish:
    channel: str
    message: str


@dataclass(frozen=True, slots=True)
class DbGet:
    tenant_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class DbUpsert:
    config: TenantRateLimitConfiguration


@dataclass(frozen=True, slots=True)
class DbDelete:
    tenant_id: uuid.UUID


Operation: TypeAlias = RedisRead | RedisFill | RedisInvalidate | RedisPublish | DbGet | DbUpsert | DbDelete


# -- counters


@dataclass
class CacheStats:
    """Loads by source and the failures seen. ``hit_rate`` is the share of loads served by L1 or Redis."""

    loads: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0))
    redis_errors: int = 0
    database_errors: int = 0
    corrupt_entries: int = 0
    invalidations_received: int = 0

    @property
    def total(self) -> int:
        return sum(self.loads.values())

    @property
    def hit_rate(self) -> float:
        total = self.total
        return (self.loads["l1"] + self.loads["redis"]) / total if total else 0.0

    def snapshot(self) -> dict[str, int]:
        return {
            **{f"loads_{k}": v for k, v in self.loads.items()},
            "redis_errors": self.redis_errors,
            "database_errors": self.database_errors,
            "corrupt_entries": self.corrupt_entries,
            "invalidations_received": self.invalidations_received,
        }


class _Backoff:
    """After a failure, skip a backend for ``interval`` seconds rather than fail on every load."""

    __slots__ = ("interval", "until")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.until = 0.0

    def allows(self, now: float) -> bool:
        return now >= self.until

    def failed(self, now: float) -> None:
        self.until = now + self.interval

    def succeeded(self) -> None:
        self.until = 0.0


class _Entry(NamedTuple):
    config: TenantRateLimitConfiguration
    ttl: float


class Loaded(NamedTuple):
    config: TenantRateLimitConfiguration
    source: Source


# -- the policy


class CachePolicy:
    """State shared by one service instance: L1, last known values, backoffs, counters."""

    def __init__(self, options: RateLimitConfigOptions) -> None:
        self.options = options
        # Read on every L1 hit: a plain attribute (a pydantic model's field costs ~20 ns more to read).
        self._on_load = options.on_load
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._generation = 0  # bumped by every invalidation; see _remember(since=...)
        # Keyed by the UUID's int: UUID.__hash__ is Python code, and the hot path hashes keys several times.
        self._l1: cachetools.TLRUCache[int, _Entry] = cachetools.TLRUCache(
            maxsize=options.l1_maxsize,
            ttu=lambda _k, entry, now: now + entry.ttl,
            timer=options.clock.monotonic,
        )
        self._last_known: cachetools.LRUCache[uuid.UUID, TenantRateLimitConfiguration] = cachetools.LRUCache(
            maxsize=options.l1_maxsize
        )
        self._redis_backoff = _Backoff(options.retry_interval)
        self._db_backoff = _Backoff(options.retry_interval)

    # L1

    def _remember(
        self,
        config: TenantRateLimitConfiguration,
        ttl: float,
        *,
        known: bool = True,
        since: int | None = None,
    ) -> None:
        """Cache ``config``; with ``since`` (a :attr:`_generation` snapshot), only if nothing was invalidated
        since, so a load that raced an invalidation cannot put the pre-write value back into L1."""
        with self._lock:
            if since is not None and since != self._generation:
                return
            if ttl > 0:
                self._l1[config.tenant_id.int] = _Entry(config, ttl)
            if known:
                self._last_known[config.tenant_id] = config

    def forget(self, tenant_id: uuid.UUID | None, *, last_known: bool = False) -> None:
        """Drop one tenant's (or, with None, every) L1 entry; last known values stay unless asked."""
        with self._lock:
            self._generation += 1
            if tenant_id is None:
                self._l1.clear()
                if last_known:
                    self._last_known.clear()
            else:
                self._l1.pop(tenant_id.int, None)
                if last_known:
                    self._last_known.pop(tenant_id, None)

    def on_invalidation(self, data: bytes | str) -> None:
        target = parse_invalidation(data)
        if target == "bad":
            logger.debug("ignoring malformed invalidation message %r", data)
            return
        with self._lock:
            self.stats.invalidations_received += 1
        self.forget(target)

    def on_subscribed(self) -> None:
        # Anything may have been written while we were not listening: start L1 afresh.
        self.forget(None)

    # counting

    def _loaded(self, config: TenantRateLimitConfiguration, source: Source) -> Loaded:
        with self._lock:
            self.stats.loads[source] += 1
        return self._report(config, source)

    def _report(self, config: TenantRateLimitConfiguration, source: Source) -> Loaded:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("rate-limit configuration of tenant %s loaded from %s", config.tenant_id, source)
        if self._on_load is not None:
            try:
                self._on_load(config.tenant_id, source)
            except Exception:
                logger.exception("on_load hook failed")
        return Loaded(config, source)

    def _redis_failed(self, exc: BaseException, doing: str) -> None:
        with self._lock:
            self.stats.redis_errors += 1
        self._redis_backoff.failed(self.options.clock.monotonic())
        logger.warning("Redis unavailable while %s: %s: %s", doing, type(exc).__name__, exc)

    # flows

    def l1_lookup(self, tenant_id: uuid.UUID) -> Loaded | None:
        """The L1 hit, if any (the services try this before starting a flow: it is the hot path)."""
        if not isinstance(tenant_id, uuid.UUID):
            raise TypeError(f"tenant_id must be a uuid.UUID, got {type(tenant_id).__name__}")
        with self._lock:  # one acquisition for the lookup and the count
            entry = self._l1.get(tenant_id.int)
            if entry is None:
                return None
            self.stats.loads["l1"] += 1
        return self._report(entry.config, "l1")

    def get_flow(self, tenant_id: uuid.UUID) -> Flow[Operation, Loaded]:
        hit = self.l1_lookup(tenant_id)
        if hit is not None:
            return hit
        key, vkey = cache_key(tenant_id), version_key(tenant_id)
        generation = self._generation
        seen_version = ""
        redis_usable = self._redis_backoff.allows(self.options.clock.monotonic())
        if redis_usable:
            try:
                raw, version = yield RedisRead(key, vkey)
            except Exception as exc:
                self._redis_failed(exc, "reading the configuration cache")
                redis_usable = False
            else:
                self._redis_backoff.succeeded()
                seen_version = _text(version)
                if raw is not None:
                    try:
                        stored = decode(raw, tenant_id)
                    except CorruptEntry as exc:
                        with self._lock:
                            self.stats.corrupt_entries += 1
                        logger.warning(
                            "corrupt cache entry %s (treated as a miss, overwritten): %s", key, exc
                        )
                    else:
                        config = stored or self.options.defaults.for_tenant(tenant_id)
                        self._remember(config, self.options.l1_ttl, since=generation)
                        return self._loaded(config, "redis")
        if not self._db_backoff.allows(self.options.clock.monotonic()):
            return self._fallback(tenant_id, None, generation)
        try:
            stored = yield DbGet(tenant_id)
        except Exception as exc:
            self._db_backoff.failed(self.options.clock.monotonic())
            return self._fallback(tenant_id, exc, generation)
        self._db_backoff.succeeded()
        current = True
        if redis_usable:
            try:
                # Refused (0) when a write bumped the version after our read: what we hold may predate it,
                # so it goes into neither cache (it is still the best answer for this one call).
                fill = RedisFill(key, vkey, seen_version, encode(stored), self.options.redis_ttl)
                current = bool((yield fill))
            except Exception as exc:
                self._redis_failed(exc, "filling the configuration cache")
        config = stored or self.options.defaults.for_tenant(tenant_id)
        self._remember(config, self.options.l1_ttl if current else 0, since=generation)
        return self._loaded(config, "database" if stored is not None else "default")

    def _fallback(self, tenant_id: uuid.UUID, exc: BaseException | None, generation: int) -> Loaded:
        with self._lock:
            last = self._last_known.get(tenant_id)
            if exc is not None:
                self.stats.database_errors += 1
        source: Source = "last_known" if last is not None else "default"
        if exc is not None:
            logger.warning(
                "database unavailable loading the rate-limit configuration of tenant %s; serving %s: %s: %s",
                tenant_id,
                "the last known value" if last is not None else "the defaults",
                type(exc).__name__,
                exc,
            )
        config = last if last is not None else self.options.defaults.for_tenant(tenant_id)
        # Held briefly so an outage costs one failed query per tenant per failure_ttl, not one per request.
        self._remember(config, self.options.failure_ttl, known=False, since=generation)
        return self._loaded(config, source)

    def _invalidate_flow(self, tenant_id: uuid.UUID) -> Flow[Operation, None]:
        try:
            # A fresh random token, never a counter: a counter restarts when its key expires, and a reader
            # that saw the old "1" would then pass the fill check against a newer write's "1".
            # It outlives the entry so that no reader's flow spans its expiry.
            yield RedisInvalidate(
                cache_key(tenant_id), version_key(tenant_id), uuid.uuid4().hex, 2 * self.options.redis_ttl
            )
        except Exception as exc:
            self._redis_failed(exc, "invalidating the configuration cache")
        try:
            yield RedisPublish(self.options.channel, str(tenant_id))
        except Exception as exc:
            self._redis_failed(exc, "publishing an invalidation")

    def upsert_flow(
        self, config: TenantRateLimitConfiguration
    ) -> Flow[Operation, TenantRateLimitConfiguration]:
        saved: TenantRateLimitConfiguration = yield DbUpsert(config)
        yield from self._invalidate_flow(saved.tenant_id)
        self.forget(saved.tenant_id)
        self._remember(saved, 0)  # the last known value is now the one we wrote
        return saved

    def delete_flow(self, tenant_id: uuid.UUID) -> Flow[Operation, bool]:
        deleted: bool = yield DbDelete(tenant_id)
        yield from self._invalidate_flow(tenant_id)
        self.forget(tenant_id, last_known=True)
        return deleted
