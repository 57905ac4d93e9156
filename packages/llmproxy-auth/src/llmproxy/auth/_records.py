"""API keys, pure: secrets, hashing, scopes, Redis keys and the cache record (what verification needs)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import _store
from ._principal import Principal

DEFAULT_PREFIX = "sk-llmp-"
#: Redis string holding the revocation epoch; every revocation increments it (no TTL: it must outlive caches).
EPOCH_KEY = "llmproxy:auth:apikeys:epoch"
_SECRET_BYTES = 32
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
    #: Built once per record (the tenant's UUID parsed then): the hit path must not allocate or parse.
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


def tombstone(row: Any) -> KeyRecord:
    """The revoked record of a key (a row with id, tenant_id, key_hash)."""
    return KeyRecord(str(row.id), str(row.tenant_id), row.key_hash, frozenset(), None, revoked=True)
