"""Verification keys for JWTs: static keys from configuration, JWKS documents, and the JWKS cache policy.

Every key is bound to a key family (``oct``, ``RSA``, ``EC``, ``OKP``) and a token's ``alg`` may only use
a key of its family: a token cannot choose HMAC to be "verified" with an RSA public key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

logger = logging.getLogger("llmproxy.auth")

#: Every algorithm this package can verify, by key family. ``none`` is not here and never will be.
ALGORITHM_FAMILY: dict[str, str] = {
    "HS256": "oct",
    "HS384": "oct",
    "HS512": "oct",
    "RS256": "RSA",
    "RS384": "RSA",
    "RS512": "RSA",
    "PS256": "RSA",
    "PS384": "RSA",
    "PS512": "RSA",
    "ES256": "EC",
    "ES384": "EC",
    "ES512": "EC",
    "EdDSA": "OKP",
}
_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
MIN_RSA_BITS = 2048


class KeyConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str | None
    family: str
    key: Any
    #: When the key names its algorithm (JWKS ``alg``), only that one.
    alg: str | None = None

    def fits(self, alg: str) -> bool:
        return ALGORITHM_FAMILY[alg] == self.family and (self.alg is None or self.alg == alg)


def _family_of(public_key: Any) -> str:
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise KeyConfigError(f"RSA keys must have at least {MIN_RSA_BITS} bits")
        return "RSA"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "EC"
    if isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return "OKP"
    raise KeyConfigError(f"unsupported public key type {type(public_key).__name__}")


def static_key(kid: str | None, value: str | bytes, algorithms: tuple[str, ...]) -> VerificationKey:
    """A configured key: a PEM public key / certificate, or else an HMAC shared secret."""
    raw = value.encode() if isinstance(value, str) else value
    if raw.lstrip().startswith(b"-----BEGIN"):
        if b"PRIVATE KEY" in raw:
            raise KeyConfigError(f"key {kid!r}: configure the public key, not the private key")
        try:
            if b"CERTIFICATE" in raw:
                public_key: Any = x509.load_pem_x509_certificate(raw).public_key()
            else:
                public_key = serialization.load_pem_public_key(raw)
        except ValueError as exc:
            raise KeyConfigError(f"key {kid!r} is not a readable PEM public key: {exc}") from None
        return VerificationKey(kid, _family_of(public_key), public_key)
    hmac_algs = [a for a in algorithms if ALGORITHM_FAMILY[a] == "oct"]
    if not hmac_algs:
        raise KeyConfigError(f"key {kid!r} is a shared secret but no HS* algorithm is allowed")
    needed = max(_HMAC_MIN_BYTES[a] for a in hmac_algs)
    if len(raw) < needed:
        raise KeyConfigError(
            f"shared secret {kid!r} must be at least {needed} bytes for {', '.join(hmac_algs)}"
        )
    return VerificationKey(kid, "oct", raw)


def keys_from_jwks(document: Any) -> list[VerificationKey]:
    """The usable signature keys of a JWKS document. HMAC (``oct``) keys are never taken from a JWKS."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    found: list[VerificationKey] = []
    for entry in document["keys"]:
        if not isinstance(entry, Mapping) or entry.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        alg = entry.get("alg")
        if alg is not None and alg not in ALGORITHM_FAMILY:
            continue
        try:
            public_key = jwt.PyJWK(dict(entry)).key
            family = _family_of(public_key)
        except (jwt.PyJWTError, KeyConfigError, ValueError, TypeError) as exc:
            logger.warning("llmproxy.auth: skipping JWKS key %r: %s", entry.get("kid"), exc)
            continue
        if family != entry["kty"]:
            continue
        kid = entry.get("kid")
        found.append(VerificationKey(kid if isinstance(kid, str) else None, family, public_key, alg))
    return found


class KeyRing:
    """Keys by ``kid``. A token without ``kid`` is verified only when exactly one key fits its ``alg``."""

    __slots__ = ("_all", "_by_kid")

    def __init__(self, keys: list[VerificationKey]) -> None:
        self._all = tuple(keys)
        self._by_kid: dict[str, list[VerificationKey]] = {}
        for key in keys:
            if key.kid is not None:
                self._by_kid.setdefault(key.kid, []).append(key)

    def __len__(self) -> int:
        return len(self._all)

    def find(self, alg: str, kid: str | None) -> Any | None:
        if kid is not None:
            for key in self._by_kid.get(kid, ()):
                if key.fits(alg):
                    return key.key
            return None
        fitting = [k for k in self._all if k.fits(alg)]
        return fitting[0].key if len(fitting) == 1 else None


#: With no keys at all, a failed JWKS fetch is retried after this long (not min_refresh_interval: until the
#: first keys arrive every JWT is refused, so the wait must be short).
FIRST_LOAD_RETRY = 1.0


class JWKSState:
    """When to (re)fetch a JWKS: on first use, when the copy is older than ``ttl``, and on an unknown
    ``kid`` — but never more often than once per ``min_refresh_interval`` (an attacker minting random ``kid``
    values must not turn the verifier into a JWKS hammer).

    Requests deciding to fetch at the same moment share one fetch: each carries the ``completed`` count it
    saw, and a driver (holding its lock) skips the fetch when another one finished meanwhile.
    """

    def __init__(self, ttl: float, min_refresh_interval: float) -> None:
        self.ttl = ttl
        self.min_refresh_interval = min_refresh_interval
        self.ring: KeyRing | None = None
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        #: Fetches finished (successful or not).
        self.completed = 0

    def should_fetch(self, alg: str, kid: str | None, now: float) -> bool:
        if self.ring is None:
            return now - self._attempted_at >= min(FIRST_LOAD_RETRY, self.min_refresh_interval)
        if now - self._attempted_at < self.min_refresh_interval:
            return False
        return now - self._fetched_at >= self.ttl or self.ring.find(alg, kid) is None

    def superseded(self, seen: int) -> bool:
        """True when a fetch finished after the request that wants another one looked."""
        return self.completed != seen

    def apply(self, document: Any, now: float) -> None:
        """Take a fetched document (or the exception the fetch raised). A failed fetch keeps the old keys."""
        self._attempted_at = now
        self.completed += 1
        if isinstance(document, BaseException):
            logger.warning("llmproxy.auth: JWKS fetch failed: %s", document)
            return
        try:
            self.ring = KeyRing(keys_from_jwks(document))
        except ValueError as exc:
            logger.warning("llmproxy.auth: JWKS document rejected: %s", exc)
            return
        self._fetched_at = now
