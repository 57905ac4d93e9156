"""API keys, sans-IO: secrets, hashing, cache records, Redis keys, and the verify/create/revoke flows.

The flows are generators that yield the I/O they need (:class:`RedisCall`, :class:`SqlFetch`,
:class:`SqlWrite`) and receive its result, so the sync and async services are thin drivers around one copy
of the logic (see ``_service.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import uuid
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from llmproxy.core import SYSTEM_CLOCK, Clock, TenantNotFound

from . import _store
from ._cache import DeadlineCache
from ._errors import ApiKeyExpired, ApiKeyNotFound, ApiKeyRevoked, AuthUnavailable, InvalidApiKey
from ._principal import Principal
from ._store import ApiKey, CreatedApiKey

logger = logging.getLogger("llmproxy.auth")

DEFAULT_PREFIX = "sk-llmp-"
#: Redis string holding the revocation epoch; every revocation increments it (no TTL: it must outlive caches).
EPOCH_KEY = "llmproxy:auth:apikeys:epoch"
_SECRET_BYTES = 32
#: After a Redis failure, verification leaves Redis alone this long (a cut connection must not cost a
#: socket timeout on every request).
REDIS_RETRY_AFTER = 1.0
_SCOPE_RE = re.compile(r"^[A-Za-z0-9_.:*/-]{1,100}$")


def cache_key(key_hash: str) -> str:
    """Redis key of one API key's cache record. No tenant hash tag: the tenant is unknown until it is read."""
    return f"llmproxy:auth:apikey:{key_hash}"


def generate_secret(prefix: str = DEFAULT_PREFIX) -> str:
    """A new secret: ``prefix`` + 43 URL-safe characters (256 bits from :mod:`secrets`)."""
    return prefix + secrets.token_urlsafe(_SECRET_BYTES)


def hash_secret(secret: str, pepper: bytes | None = None) -> str:
    """Hex SHA-256 of the secret (HMAC-SHA-256 with ``pepper`` when configured).

    A fast hash is right here: the secrets carry 256 bits of entropy, so there is nothing to brute-force.
    """
    data = secret.encode()
    if pepper:
        return hmac.new(pepper, data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


def secret_hint(secret: str, prefix: str) -> str:
    return f"{secret[: len(prefix) + 4]}...{secret[-4:]}"


def normalize_scopes(scopes: Iterable[str]) -> frozenset[str]:
    if isinstance(scopes, str):
        raise TypeError("scopes must be a collection of strings, not one string")
    result = frozenset(scopes)
    for scope in result:
        if not isinstance(scope, str) or not _SCOPE_RE.match(scope):
            raise ValueError(f"invalid scope {scope!r}: 1-100 characters of letters, digits and _.:*/-")
    return result


def as_uuid(value: uuid.UUID | str, what: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ValueError(f"{what} must be a UUID, got {value!r}") from None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What verification needs to know about a key; cached in L1 and Redis."""

    id: str
    tenant_id: str
    key_hash: str
    scopes: frozenset[str]
    expires_at: float | None
    revoked: bool
    #: Built once per record: the hit path must not allocate.
    principal: Principal = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        principal = Principal(
            kind="api_key",
            tenant_id=self.tenant_id,
            api_key_id=self.id,
            scopes=self.scopes,
            expires_at=self.expires_at,
        )
        object.__setattr__(self, "principal", principal)


_NEGATIVE = b"-"


def encode_record(record: KeyRecord | None) -> bytes:
    if record is None:
        return _NEGATIVE
    return json.dumps(
        {
            "id": record.id,
            "t": record.tenant_id,
            "h": record.key_hash,
            "s": sorted(record.scopes),
            "e": record.expires_at,
            "r": record.revoked,
        },
        separators=(",", ":"),
    ).encode()


def decode_record(raw: bytes | str) -> KeyRecord | None:
    raw = raw.encode() if isinstance(raw, str) else raw
    if raw == _NEGATIVE:
        return None
    data = json.loads(raw)
    return KeyRecord(
        id=data["id"],
        tenant_id=data["t"],
        key_hash=data["h"],
        scopes=frozenset(data["s"]),
        expires_at=data["e"],
        revoked=bool(data["r"]),
    )


def record_from_row(row: Any) -> KeyRecord:
    expires = _store.utc(row.expires_at)
    return KeyRecord(
        id=str(row.id),
        tenant_id=str(row.tenant_id),
        key_hash=row.key_hash,
        scopes=frozenset(row.scopes or ()),
        expires_at=expires.timestamp() if expires else None,
        revoked=row.revoked_at is not None,
    )


# -- the I/O a flow asks for -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RedisCall:
    """Call ``method(*args, **kwargs)`` on the Redis client; the answer is its result or ``REDIS_FAILED``."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SqlFetch:
    """Run a SELECT; the answer is the list of rows. Database errors are thrown into the flow."""

    statement: sa.Executable


@dataclass(frozen=True, slots=True)
class SqlWrite:
    """Run a statement in its own transaction (executemany with ``params``); the answer is the rowcount."""

    statement: sa.Executable
    params: list[dict[str, Any]] | None = None


class _Failed:
    def __repr__(self) -> str:
        return "REDIS_FAILED"


REDIS_FAILED: Any = _Failed()
Op = RedisCall | SqlFetch | SqlWrite
Flow = Generator[Op, Any, Any]


@dataclass(frozen=True, slots=True)
class ApiKeyOptions:
    prefix: str = DEFAULT_PREFIX
    pepper: bytes | None = None
    #: How long a process trusts its own copy of a key record (bounded staleness when Redis is unreachable).
    l1_ttl: float = 30.0
    l1_maxsize: int = 100_000
    #: How long a record lives in Redis.
    redis_ttl: float = 300.0
    #: How long "no such key" is remembered (L1 and Redis).
    negative_ttl: float = 30.0
    #: How often a process checks the revocation epoch (revocations reach every process within this).
    sync_interval: float = 0.5
    #: How often buffered ``last_used_at`` values are written to the database.
    last_used_interval: float = 60.0

    def __post_init__(self) -> None:
        if not self.prefix or len(self.prefix) > 16:
            raise ValueError("prefix must be 1-16 characters")
        for name in ("l1_ttl", "redis_ttl", "negative_ttl", "sync_interval", "last_used_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.sync_interval > 1.0:
            raise ValueError("sync_interval must be <= 1 s (revocations must reach every process within 1 s)")


class ApiKeyCore:
    """The state one service keeps in its process (L1, revocation epoch, last-used buffer) and the flows."""

    def __init__(self, options: ApiKeyOptions, clock: Clock = SYSTEM_CLOCK) -> None:
        self.options = options
        self.clock = clock
        self.l1: DeadlineCache[str, KeyRecord | None] = DeadlineCache(options.l1_maxsize, clock.monotonic)
        self._epoch: Any = None
        self._redis_down_until = float("-inf")
        self._next_sync = float("-inf")
        self._last_used: dict[str, float] = {}
        self._next_flush = clock.monotonic() + options.last_used_interval
        self._lock = threading.Lock()
        self._min_len = len(options.prefix) + 20

    # -- pure decisions --------------------------------------------------------------------------------------

    def well_formed(self, secret: str) -> bool:
        return secret.startswith(self.options.prefix) and self._min_len <= len(secret) <= 256

    def redis_usable(self) -> bool:
        return self.clock.monotonic() >= self._redis_down_until

    def note_redis_result(self, value: Any) -> Any:
        if value is REDIS_FAILED:
            self._redis_down_until = self.clock.monotonic() + REDIS_RETRY_AFTER
        return value

    def apply_epoch(self, value: Any, now: float) -> None:
        if value is REDIS_FAILED:
            return  # keep L1; entries still expire after l1_ttl
        self._next_sync = now + self.options.sync_interval
        if value != self._epoch:
            self._epoch = value
            self.l1.clear()

    def decide(self, record: KeyRecord | None, key_hash: str) -> Principal:
        if record is None or not hmac.compare_digest(record.key_hash, key_hash):
            raise InvalidApiKey("Incorrect API key provided.")
        if record.revoked:
            raise ApiKeyRevoked("This API key has been revoked.")
        if record.expires_at is not None and self.clock.now() >= record.expires_at:
            raise ApiKeyExpired("This API key has expired.")
        return record.principal

    def note_used(self, key_id: str) -> bool:
        """Buffer the use; True when the buffer is due to be written."""
        self._last_used[key_id] = self.clock.now()
        return self.clock.monotonic() >= self._next_flush

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

    def verify(self, secret: str) -> Flow:
        if not isinstance(secret, str) or not self.well_formed(secret):
            raise InvalidApiKey("Incorrect API key provided.")
        key_hash = hash_secret(secret, self.options.pepper)
        now = self.clock.monotonic()
        if now >= self._next_sync and self.redis_usable():
            self.apply_epoch(self.note_redis_result((yield RedisCall("get", (EPOCH_KEY,)))), now)
        hit, record = self.l1.get(key_hash)
        if not hit:
            record = yield from self._load(key_hash)
            ttl = (
                self.options.l1_ttl
                if record is not None
                else min(self.options.l1_ttl, self.options.negative_ttl)
            )
            self.l1.put(key_hash, record, now + ttl)
        principal = self.decide(record, key_hash)
        if self.note_used(principal.api_key_id or ""):
            yield from self.flush_last_used()
        return principal

    def _load(self, key_hash: str) -> Generator[Op, Any, KeyRecord | None]:
        key = cache_key(key_hash)
        raw = (
            self.note_redis_result((yield RedisCall("get", (key,)))) if self.redis_usable() else REDIS_FAILED
        )
        if raw is not REDIS_FAILED and raw is not None:
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
        if raw is not REDIS_FAILED:
            ttl = self.options.redis_ttl if record is not None else self.options.negative_ttl
            # NX: never overwrite a revocation tombstone written while we were reading the database.
            yield RedisCall("set", (key, encode_record(record)), {"nx": True, "px": max(1, int(ttl * 1000))})
        return record

    def flush_last_used(self) -> Flow:
        batch = self.take_last_used()
        if not batch:
            return 0
        try:
            return (yield SqlWrite(_store.touch_keys(), list(_store.touch_params(batch))))
        except sa.exc.SQLAlchemyError as exc:
            logger.warning("llmproxy.auth: could not write last_used_at (%s); will retry", type(exc).__name__)
            self.give_back_last_used(batch)
            return 0

    def create(
        self,
        tenant_id: uuid.UUID | str,
        name: str,
        scopes: Iterable[str],
        expires_at: datetime | None,
    ) -> Flow:
        tenant = as_uuid(tenant_id, "tenant_id")
        name = name.strip() if isinstance(name, str) else name
        if not isinstance(name, str) or not 1 <= len(name) <= 200:
            raise ValueError("name must be 1-200 characters")
        if expires_at is not None and expires_at.tzinfo is None:
            raise ValueError("expires_at must be timezone-aware")
        secret = generate_secret(self.options.prefix)
        key = ApiKey(
            id=uuid.uuid4(),
            tenant_id=tenant,
            name=name,
            hint=secret_hint(secret, self.options.prefix),
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

    def revoke(self, key_id: uuid.UUID | str) -> Flow:
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
        return None

    def revoke_tenant(self, tenant_id: uuid.UUID | str) -> Flow:
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

    def _publish_revoked(self, rows: Iterable[Any]) -> Generator[Op, Any, bool]:
        """Tombstone each key (rows with id, tenant_id, key_hash) in L1 and Redis, then bump the epoch.

        False when Redis could not be told (other processes would keep trusting their copies).
        """
        ok = True
        ms = max(1, int(self.options.redis_ttl * 1000))
        for row in rows:
            tombstone = KeyRecord(
                str(row.id), str(row.tenant_id), row.key_hash, frozenset(), None, revoked=True
            )
            self.l1.put(row.key_hash, tombstone, self.clock.monotonic() + self.options.l1_ttl)
            written = yield RedisCall("set", (cache_key(row.key_hash), encode_record(tombstone)), {"px": ms})
            ok = ok and written is not REDIS_FAILED
        bumped = yield RedisCall("incr", (EPOCH_KEY,))
        return ok and bumped is not REDIS_FAILED

    def get(self, key_id: uuid.UUID | str) -> Flow:
        kid = as_uuid(key_id, "key_id")
        rows = yield SqlFetch(_store.select_by_id(kid))
        if not rows:
            raise ApiKeyNotFound(kid)
        return _store.row_to_api_key(rows[0])

    def list(self, tenant_id: uuid.UUID | str) -> Flow:
        rows = yield SqlFetch(_store.select_by_tenant(as_uuid(tenant_id, "tenant_id")))
        return [_store.row_to_api_key(r) for r in rows]
