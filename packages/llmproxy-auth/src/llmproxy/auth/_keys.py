"""API keys, sans-IO: the options, the operations a flow asks for, and the verify/create/revoke flows.

A flow is a generator yielding typed operations (:class:`RedisGet`, :class:`RedisSet`, :class:`RedisIncr`,
:class:`SqlFetch`, :class:`SqlWrite`) and returning its result; core's ``run_flow`` / ``arun_flow`` perform
them, and a failed operation is thrown back in at its ``yield``. The flows catch what they have a policy for
(a Redis failure: carry on without Redis; a database failure while verifying: 503), so the sync and async
services in ``_service.py`` are a ``match`` and a line a method.
"""

from __future__ import annotations

import hmac
import logging
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeAlias

import sqlalchemy as sa
from pydantic import Field, field_validator
from redis.exceptions import RedisError

from llmproxy.core import SYSTEM_CLOCK, Clock, Flow, Options, TenantNotFound

from . import _store
from ._cache import DeadlineCache
from ._errors import ApiKeyExpired, ApiKeyNotFound, ApiKeyRevoked, AuthUnavailable, InvalidApiKey
from ._principal import Principal
from ._records import (
    DEFAULT_PREFIX,
    EPOCH_KEY,
    KeyRecord,
    as_uuid,
    cache_key,
    decode_record,
    encode_record,
    generate_secret,
    hash_secret,
    normalize_scopes,
    record_from_row,
    secret_hint,
    tombstone,
)
from ._store import ApiKey, CreatedApiKey

logger = logging.getLogger("llmproxy.auth")

#: After a Redis failure, verification leaves Redis alone this long (a cut connection must not cost a
#: socket timeout on every request).
REDIS_RETRY_AFTER = 1.0
#: What a Redis client raises when the server cannot be reached or answers with an error.
REDIS_ERRORS = (RedisError, OSError)

# -- the options -------------------------------------------------------------------------------------------

#: A duration in seconds: positive, finite, at most a year (Redis refuses larger expiries).
Seconds: TypeAlias = Annotated[float, Field(gt=0, le=365 * 86400, allow_inf_nan=False)]


class ApiKeyOptions(Options):
    """How API keys are made and cached: one frozen, validated object both services take
    (``options=``, or the same names as keyword arguments)."""

    #: The recognisable start of every secret. Characters of a bearer token only (RFC 6750's b64token).
    prefix: str = Field(DEFAULT_PREFIX, pattern=r"^[A-Za-z0-9._~+/-]{1,16}$")
    #: When set, keys are stored as HMAC-SHA-256(pepper, secret) instead of SHA-256(secret).
    pepper: bytes | None = Field(None, repr=False)
    #: How long a process trusts its own copy of a key record (bounded staleness when Redis is unreachable).
    l1_ttl: Seconds = 30.0
    l1_maxsize: int = Field(100_000, ge=1)
    #: How long a record lives in Redis.
    redis_ttl: Seconds = 300.0
    #: How long "no such key" is remembered (L1 and Redis).
    negative_ttl: Seconds = 30.0
    #: How often a process checks the revocation epoch (revocations reach every process within this).
    sync_interval: Seconds = 0.5
    #: How often buffered ``last_used_at`` values are written to the database.
    last_used_interval: Seconds = 60.0

    @field_validator("sync_interval")
    @classmethod
    def _within_a_second(cls, value: float) -> float:
        if value > 1.0:
            raise ValueError("must be <= 1 s (revocations must reach every process within 1 s)")
        return value


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


# -- the I/O a flow asks for -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RedisGet:
    """``GET key`` -> bytes or None."""

    key: str


@dataclass(frozen=True, slots=True)
class RedisSet:
    """``SET key value PX px [NX]`` -> the client's answer."""

    key: str
    value: bytes
    px: int
    nx: bool = False


@dataclass(frozen=True, slots=True)
class RedisIncr:
    """``INCR key`` -> the new value."""

    key: str


@dataclass(frozen=True, slots=True)
class SqlFetch:
    """Run a SELECT -> the list of rows."""

    statement: sa.Executable


@dataclass(frozen=True, slots=True)
class SqlWrite:
    """Run a statement in its own transaction (executemany with ``params``) -> the rowcount."""

    statement: sa.Executable
    params: list[dict[str, Any]] | None = None


Operation: TypeAlias = RedisGet | RedisSet | RedisIncr | SqlFetch | SqlWrite


# -- the policy --------------------------------------------------------------------------------------------


class ApiKeyCore:
    """The state one service keeps in its process (L1, revocation epoch, last-used buffer) and the flows."""

    def __init__(self, options: ApiKeyOptions, clock: Clock = SYSTEM_CLOCK) -> None:
        self.options = options
        self.clock = clock
        self.l1: DeadlineCache[str, KeyRecord | None] = DeadlineCache(options.l1_maxsize, clock.monotonic)
        self._epoch: bytes | None = None
        self._redis_down_until = float("-inf")
        self._next_sync = float("-inf")
        self._last_used: dict[str, float] = {}
        self._next_flush = clock.monotonic() + options.last_used_interval
        self._lock = threading.Lock()
        self._min_len = len(options.prefix) + 20
        self._record_px = _ms(options.redis_ttl)
        self._negative_px = _ms(options.negative_ttl)
        self._negative_l1_ttl = min(options.l1_ttl, options.negative_ttl)

    # -- pure decisions --------------------------------------------------------------------------------------

    def key_hash(self, secret: str) -> str:
        """The stored hash of a well-formed secret; :class:`InvalidApiKey` for anything else."""
        if (
            not isinstance(secret, str)
            or not secret.startswith(self.options.prefix)
            or not self._min_len <= len(secret) <= 256
        ):
            raise InvalidApiKey("Incorrect API key provided.")
        return hash_secret(secret, self.options.pepper)

    def redis_usable(self, now: float) -> bool:
        return now >= self._redis_down_until

    def _epoch_due(self, now: float) -> bool:
        return now >= self._next_sync and now >= self._redis_down_until

    def _redis_failed(self, exc: Exception, doing: str) -> None:
        self._redis_down_until = self.clock.monotonic() + REDIS_RETRY_AFTER
        logger.warning(
            "llmproxy.auth: Redis failed %s (%s); continuing without it", doing, type(exc).__name__
        )

    def accept(self, record: KeyRecord | None, key_hash: str) -> Principal:
        """The principal of a usable record (its use buffered); the refusal otherwise."""
        if record is None or not hmac.compare_digest(record.key_hash, key_hash):
            raise InvalidApiKey("Incorrect API key provided.")
        if record.revoked:
            raise ApiKeyRevoked("This API key has been revoked.")
        now = self.clock.now()
        if record.expires_at is not None and now >= record.expires_at:
            raise ApiKeyExpired("This API key has expired.")
        self._last_used[record.id] = now
        return record.principal

    def take_last_used(self) -> dict[str, float]:
        with self._lock:
            batch, self._last_used = self._last_used, {}
            self._next_flush = self.clock.monotonic() + self.options.last_used_interval
        return batch

    def give_back_last_used(self, batch: dict[str, float]) -> None:
        with self._lock:
            for key_id, ts in batch.items():
                self._last_used[key_id] = max(ts, self._last_used.get(key_id, ts))

    # -- flows -----------------------------------------------------------------------------------------------

    def verify(self, secret: str) -> Principal | Flow[Operation, Principal]:
        """The principal at once when L1 holds the key and nothing is due (the hot path: no flow, no I/O);
        else the flow that reads the revocation epoch, loads the record or writes the last-used times."""
        key_hash = self.key_hash(secret)
        now = self.clock.monotonic()
        if now < self._next_flush and not self._epoch_due(now):
            hit, record = self.l1.get(key_hash)
            if hit:
                return self.accept(record, key_hash)
        return self._verify(key_hash, now)

    def _verify(self, key_hash: str, now: float) -> Flow[Operation, Principal]:
        if self._epoch_due(now):
            yield from self._sync_epoch(now)
        hit, record = self.l1.get(key_hash)
        if not hit:
            record = yield from self._load(key_hash)
            self.l1.put(
                key_hash, record, now + (self.options.l1_ttl if record is not None else self._negative_l1_ttl)
            )
        principal = self.accept(record, key_hash)
        if self.clock.monotonic() >= self._next_flush:
            yield from self.flush_last_used()
        return principal

    def _sync_epoch(self, now: float) -> Flow[Operation, None]:
        """Drop the whole L1 when another process revoked something since the last look."""
        try:
            epoch = yield RedisGet(EPOCH_KEY)
        except REDIS_ERRORS as exc:
            self._redis_failed(exc, "reading the revocation epoch")
            return  # keep L1: its entries still expire after l1_ttl
        self._next_sync = now + self.options.sync_interval
        if epoch != self._epoch:
            self._epoch = epoch
            self.l1.clear()

    def _load(self, key_hash: str) -> Flow[Operation, KeyRecord | None]:
        key = cache_key(key_hash)
        redis_ok = self.redis_usable(self.clock.monotonic())
        if redis_ok:
            try:
                raw = yield RedisGet(key)
            except REDIS_ERRORS as exc:
                self._redis_failed(exc, "reading an API key record")
                redis_ok = False
            else:
                if raw is not None:
                    try:
                        return decode_record(raw)
                    except (ValueError, KeyError, TypeError):
                        logger.warning("llmproxy.auth: unreadable API key cache record; reading the database")
        try:
            rows = yield SqlFetch(_store.select_by_hash(key_hash))
        except sa.exc.SQLAlchemyError as exc:
            logger.error("llmproxy.auth: API key store unavailable: %s", type(exc).__name__)
            raise AuthUnavailable("API keys cannot be checked right now; retry later.") from None
        record = record_from_row(rows[0]) if rows else None
        if redis_ok:
            px = self._record_px if record is not None else self._negative_px
            try:
                # NX: never overwrite a revocation tombstone written while we were reading the database.
                yield RedisSet(key, encode_record(record), px, nx=True)
            except REDIS_ERRORS as exc:
                self._redis_failed(exc, "caching an API key record")
        return record

    def flush_last_used(self) -> Flow[Operation, int]:
        batch = self.take_last_used()
        if not batch:
            return 0
        try:
            written: int = yield SqlWrite(_store.touch_keys(), list(_store.touch_params(batch)))
        except sa.exc.SQLAlchemyError as exc:
            logger.warning("llmproxy.auth: could not write last_used_at (%s); will retry", type(exc).__name__)
            self.give_back_last_used(batch)
            return 0
        return written

    def create(
        self,
        tenant_id: uuid.UUID | str,
        name: str,
        scopes: Iterable[str],
        expires_at: datetime | None,
    ) -> Flow[Operation, CreatedApiKey]:
        tenant = as_uuid(tenant_id, "tenant_id")
        name = name.strip() if isinstance(name, str) else name
        if not isinstance(name, str) or not 1 <= len(name) <= 200:
            raise ValueError("name must be 1-200 characters")
        if expires_at is not None and expires_at.tzinfo is None:
            raise ValueError("expires_at must be timezone-aware")
        prefix = self.options.prefix
        secret = generate_secret(prefix)
        key = ApiKey(
            id=uuid.uuid4(),
            tenant_id=tenant,
            name=name,
            hint=secret_hint(secret, prefix),
            scopes=normalize_scopes(scopes),
            created_at=datetime.fromtimestamp(self.clock.now(), UTC),
            expires_at=expires_at.astimezone(UTC) if expires_at else None,
            revoked_at=None,
            last_used_at=None,
        )
        try:
            yield SqlWrite(_store.insert_key(key, hash_secret(secret, self.options.pepper)))
        except sa.exc.IntegrityError:
            raise TenantNotFound(tenant) from None
        return CreatedApiKey(secret=secret, key=key)

    def revoke(self, key_id: uuid.UUID | str) -> Flow[Operation, None]:
        """Mark revoked in the database, then tell every process (idempotent: safe to retry)."""
        kid = as_uuid(key_id, "key_id")
        rows = yield SqlFetch(_store.select_by_id(kid))
        if not rows:
            raise ApiKeyNotFound(kid)
        yield SqlWrite(_store.revoke_key(kid, datetime.fromtimestamp(self.clock.now(), UTC)))
        if not (yield from self._publish_revoked(rows)):
            raise AuthUnavailable(
                "The key is revoked in the database but other processes could not be told; retry revoke()."
            )

    def revoke_tenant(self, tenant_id: uuid.UUID | str) -> Flow[Operation, int]:
        """Revoke every key of the tenant as :meth:`revoke` does; the number newly revoked (idempotent)."""
        tenant = as_uuid(tenant_id, "tenant_id")
        newly = yield SqlWrite(
            _store.revoke_tenant_keys(tenant, datetime.fromtimestamp(self.clock.now(), UTC))
        )
        # Every key of the tenant, the ones revoked before too: a retry must reach the processes a failed
        # attempt did not, and the tombstones must outlive the rows if the tenant is deleted next.
        rows = yield SqlFetch(_store.select_hashes_by_tenant(tenant))
        if not (yield from self._publish_revoked(rows)):
            raise AuthUnavailable(
                "The tenant's keys are revoked in the database but other processes could not be told; "
                "retry revoke_tenant()."
            )
        return int(newly or 0)

    def _publish_revoked(self, rows: Iterable[Any]) -> Flow[Operation, bool]:
        """Tombstone each key (rows with id, tenant_id, key_hash) in L1 and Redis, then bump the epoch.

        False when Redis could not be told (other processes would keep trusting their copies).
        """
        told = True
        for row in rows:
            dead = tombstone(row)
            self.l1.put(row.key_hash, dead, self.clock.monotonic() + self.options.l1_ttl)
            try:
                yield RedisSet(cache_key(row.key_hash), encode_record(dead), self._record_px)
            except REDIS_ERRORS as exc:
                self._redis_failed(exc, "writing a revocation")
                told = False
        try:
            yield RedisIncr(EPOCH_KEY)
        except REDIS_ERRORS as exc:
            self._redis_failed(exc, "bumping the revocation epoch")
            told = False
        return told

    def get(self, key_id: uuid.UUID | str) -> Flow[Operation, ApiKey]:
        kid = as_uuid(key_id, "key_id")
        rows = yield SqlFetch(_store.select_by_id(kid))
        if not rows:
            raise ApiKeyNotFound(kid)
        return _store.row_to_api_key(rows[0])

    def list(self, tenant_id: uuid.UUID | str) -> Flow[Operation, list[ApiKey]]:
        rows = yield SqlFetch(_store.select_by_tenant(as_uuid(tenant_id, "tenant_id")))
        return [_store.row_to_api_key(r) for r in rows]
