"""JWT bearer tokens: settings, the verification flow (sans-IO), claims → principal, and the verifier."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from jwt.utils import base64url_decode
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmproxy.core import SYSTEM_CLOCK, Clock, Flow, arun_flow, run_flow

from ._cache import DeadlineCache
from ._errors import AuthUnavailable, InvalidToken, TokenExpired
from ._jwt_keys import ALGORITHM_FAMILY, JWKSState, KeyRing, static_key
from ._principal import Principal


class JWTSettings(BaseSettings):
    """How tokens are verified and how claims map to a principal. Env prefix ``LLMPROXY_JWT_``."""

    model_config = SettingsConfigDict(env_prefix="LLMPROXY_JWT_", extra="forbid", frozen=True)

    #: Expected ``iss`` (one or several). None: not checked.
    issuer: str | tuple[str, ...] | None = None
    #: Expected ``aud`` (the token must name one of these). None: tokens with ``aud`` are rejected.
    audience: str | tuple[str, ...] | None = None
    #: The explicit allow-list. ``none`` is refused; HS* needs a shared secret in ``keys``.
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    #: Where the identity provider publishes its public keys (https, or http on loopback for tests).
    jwks_url: str | None = None
    #: Static keys by ``kid`` (``""``: no kid): a PEM public key / certificate, or a shared secret.
    keys: dict[str, str] = Field(default_factory=dict)
    #: Clock skew tolerated on ``exp`` / ``nbf`` (seconds).
    leeway: float = Field(default=60.0, ge=0)
    required_claims: tuple[str, ...] = ("exp",)
    tenant_claim: str = "tenant_id"
    user_claim: str = "sub"
    roles_claim: str = "roles"
    #: A space-separated string (OAuth ``scope``) or a list (e.g. ``scp``).
    scopes_claim: str = "scope"
    jwks_cache_ttl: float = Field(default=300.0, gt=0)
    jwks_min_refresh_interval: float = Field(default=30.0, ge=0)
    jwks_timeout: float = Field(default=5.0, gt=0)
    #: Verified tokens remembered by SHA-256 until they expire (0 disables the cache).
    token_cache_size: int = Field(default=10_000, ge=0)
    #: Upper bound on how long a verified token is trusted without verifying its signature again.
    token_cache_max_age: float = Field(default=300.0, gt=0)
    max_token_length: int = Field(default=8192, ge=256)

    @field_validator("algorithms")
    @classmethod
    def _check_algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one algorithm must be allowed")
        for alg in value:
            if alg.lower() == "none":
                raise ValueError("the 'none' algorithm is never accepted")
            if alg not in ALGORITHM_FAMILY:
                raise ValueError(f"unsupported algorithm {alg!r}; choose from {', '.join(ALGORITHM_FAMILY)}")
        return tuple(dict.fromkeys(value))

    @field_validator("jwks_url")
    @classmethod
    def _check_jwks_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        url = httpx.URL(value)
        loopback = url.host in ("127.0.0.1", "localhost", "::1")
        if url.scheme != "https" and not (url.scheme == "http" and loopback):
            raise ValueError("jwks_url must use https (plain http only on loopback)")
        return value

    @model_validator(mode="after")
    def _check_keys(self) -> JWTSettings:
        if not self.jwks_url and not self.keys:
            raise ValueError("configure jwks_url or keys (or both)")
        for kid, value in self.keys.items():
            static_key(kid or None, value, self.algorithms)  # raises a ValueError naming the key
        return self


def _as_set(value: str | tuple[str, ...] | None) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset((value,) if isinstance(value, str) else value)


@dataclass(frozen=True, slots=True)
class FetchJWKS:
    """The I/O a verification flow asks for: GET the JWKS and hand the JSON (or the exception) to
    :meth:`JWKSState.apply`, unless another fetch finished meanwhile."""

    url: str
    timeout: float
    #: ``JWKSState.completed`` when the fetch was decided (to share one fetch between concurrent requests).
    seen: int


def parse_header(token: str) -> dict[str, Any]:
    if token.count(".") != 2:
        raise InvalidToken("Malformed token.")
    try:
        header = json.loads(base64url_decode(token[: token.index(".")]))
    except (ValueError, TypeError, UnicodeDecodeError):
        raise InvalidToken("Malformed token header.") from None
    if not isinstance(header, dict):
        raise InvalidToken("Malformed token header.")
    return header


def _strings(value: Any, claim: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    raise InvalidToken(f"Claim {claim!r} must be a string or a list of strings.")


def _number(payload: dict[str, Any], claim: str) -> float | None:
    value = payload.get(claim)
    if value is None:
        return None
    # json accepts NaN and Infinity: an ``exp`` of either would make a token that never expires.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidToken(f"Claim {claim!r} must be a finite number.")
    return float(value)


class JWTCore:
    """Everything a verifier decides, with its caches. Drivers only perform :class:`FetchJWKS`."""

    def __init__(self, settings: JWTSettings, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self.clock = clock
        self.allowed = frozenset(settings.algorithms)
        self.static = KeyRing(
            [static_key(kid or None, v, settings.algorithms) for kid, v in settings.keys.items()]
        )
        self.jwks = (
            JWKSState(settings.jwks_cache_ttl, settings.jwks_min_refresh_interval)
            if settings.jwks_url
            else None
        )
        self.tokens: DeadlineCache[bytes, Principal] | None = (
            DeadlineCache(settings.token_cache_size, clock.monotonic) if settings.token_cache_size else None
        )
        self._issuers = _as_set(settings.issuer)
        self._audiences = _as_set(settings.audience)
        self._algorithms = {alg: jwt.get_algorithm_by_name(alg) for alg in settings.algorithms}

    def cached(self, token: str) -> tuple[bytes, Principal | None]:
        digest = hashlib.sha256(token.encode()).digest()
        if self.tokens is None:
            return digest, None
        return digest, self.tokens.get(digest)[1]

    def verify(self, token: str) -> Principal | Flow[FetchJWKS, Principal]:
        """The cached principal at once (the hot path: no flow); else the flow that verifies the token."""
        if not isinstance(token, str) or not token:
            raise InvalidToken("Malformed token.")
        digest, principal = self.cached(token)
        if principal is not None:
            return principal
        return self._verify(token, digest)

    def _verify(self, token: str, digest: bytes) -> Flow[FetchJWKS, Principal]:
        if len(token) > self.settings.max_token_length:
            raise InvalidToken("Token too long.")
        header = parse_header(token)
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self.allowed:
            raise InvalidToken("Token algorithm not allowed.")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("Malformed token header.")
        # jku / x5u / jwk / x5c headers are ignored on purpose: keys come only from our configuration.
        key = self.static.find(alg, kid)
        if key is None and self.jwks is not None:
            key = yield from self._jwks_key(alg, kid)
        if key is None:
            raise InvalidToken("No key matches the token.")
        payload = self.verified_payload(token, alg, key, header)
        principal = self.to_principal(payload)
        if self.tokens is not None:
            self._remember(digest, principal)
        return principal

    def verified_payload(self, token: str, alg: str, key: Any, header: dict[str, Any]) -> dict[str, Any]:
        """The payload, once the signature (by pyjwt's algorithm objects), issuer and audience check out.

        Done here rather than through ``jwt.decode`` so the header is parsed once, the key is already
        prepared, and no option merging runs per call: the cold path must not cost more than plain pyjwt.
        """
        if "crit" in header or header.get("b64", True) is not True:
            raise InvalidToken("Unsupported token header.")
        signing_input, _, signature = token.rpartition(".")
        try:
            ok = self._algorithms[alg].verify(signing_input.encode(), key, base64url_decode(signature))
            payload = json.loads(base64url_decode(signing_input[signing_input.index(".") + 1 :]))
        except (ValueError, TypeError, UnicodeError):
            raise InvalidToken("Token verification failed.") from None
        if not ok:
            raise InvalidToken("Token verification failed.")
        if not isinstance(payload, dict):
            raise InvalidToken("Malformed token payload.")
        if self._issuers is not None:
            iss = payload.get("iss")
            if not isinstance(iss, str) or iss not in self._issuers:
                raise InvalidToken("Token issuer is not accepted.")
        aud = payload.get("aud")
        if self._audiences is None:
            if aud is not None:
                raise InvalidToken("Token names an audience but none is configured.")
        elif not (
            (isinstance(aud, str) and aud in self._audiences)
            or (isinstance(aud, list) and any(isinstance(a, str) and a in self._audiences for a in aud))
        ):
            raise InvalidToken("Token audience is not accepted.")
        return payload

    def _jwks_key(self, alg: str, kid: str | None) -> Flow[FetchJWKS, Any]:
        jwks = self.jwks
        assert jwks is not None
        assert self.settings.jwks_url is not None
        now = self.clock.monotonic()
        if jwks.should_fetch(alg, kid, now):
            yield FetchJWKS(self.settings.jwks_url, self.settings.jwks_timeout, jwks.completed)
        if jwks.ring is None:
            raise AuthUnavailable("Token keys cannot be loaded right now; retry later.")
        return jwks.ring.find(alg, kid)

    def to_principal(self, payload: dict[str, Any]) -> Principal:
        s = self.settings
        now = self.clock.now()
        for claim in s.required_claims:
            if payload.get(claim) is None:
                raise InvalidToken(f"Token has no {claim!r} claim.")
        exp, nbf = _number(payload, "exp"), _number(payload, "nbf")
        _number(payload, "iat")
        if exp is not None and now > exp + s.leeway:
            raise TokenExpired("Token has expired.")
        if nbf is not None and now < nbf - s.leeway:
            raise InvalidToken("Token is not valid yet.")
        tenant = payload.get(s.tenant_claim)
        try:
            tenant_id = str(uuid.UUID(tenant)) if isinstance(tenant, str) else None
        except ValueError:
            tenant_id = None
        if tenant_id is None:
            raise InvalidToken(f"Token has no valid {s.tenant_claim!r} claim (a tenant UUID).")
        user = payload.get(s.user_claim)
        if user is not None and not isinstance(user, str):
            raise InvalidToken(f"Claim {s.user_claim!r} must be a string.")
        return Principal(
            kind="jwt",
            tenant_id=tenant_id,
            user_id=user,
            roles=_strings(payload.get(s.roles_claim), s.roles_claim),
            scopes=_strings(payload.get(s.scopes_claim), s.scopes_claim),
            expires_at=exp,
            claims=payload,
        )

    def jwks_wanted(self, op: FetchJWKS) -> bool:
        """False when another fetch finished since ``op`` was decided (it already answered the question)."""
        return self.jwks is not None and not self.jwks.superseded(op.seen)

    def jwks_arrived(self, document: Any) -> None:
        """Take a fetched JWKS document, or the exception the fetch raised (the keys known are kept)."""
        assert self.jwks is not None
        self.jwks.apply(document, self.clock.monotonic())

    def _remember(self, digest: bytes, principal: Principal) -> None:
        assert self.tokens is not None
        now_wall, now_mono = self.clock.now(), self.clock.monotonic()
        lifetime = self.settings.token_cache_max_age
        if principal.expires_at is not None:
            lifetime = min(lifetime, principal.expires_at + self.settings.leeway - now_wall)
        self.tokens.put(digest, principal, now_mono + lifetime)


def _document(response: httpx.Response) -> Any:
    response.raise_for_status()
    return response.json()


#: A fetch that fails this way keeps the keys already known (anything else is a bug and propagates).
_FETCH_ERRORS = (httpx.HTTPError, ValueError)


class JWTVerifier:
    """Verifies JWT bearer tokens: :meth:`verify` (sync) and :meth:`averify` (asyncio) run one flow.

    ``settings`` (default: :class:`JWTSettings` read from the environment) with any of its fields given as
    keyword overrides, validated together: ``JWTVerifier(settings, leeway=0)``, ``JWTVerifier(keys={...})``.
    """

    def __init__(
        self,
        settings: JWTSettings | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        http_client: httpx.Client | None = None,
        async_http_client: httpx.AsyncClient | None = None,
        **overrides: Any,
    ) -> None:
        if settings is not None and not isinstance(settings, JWTSettings):
            raise TypeError(f"settings must be a JWTSettings, got {type(settings).__name__}")
        if overrides:
            settings = JWTSettings(**{**(settings.model_dump() if settings else {}), **overrides})
        self.settings = settings if settings is not None else JWTSettings()
        self._core = JWTCore(self.settings, clock)
        self._http = http_client
        self._ahttp = async_http_client
        self._owns_http = http_client is None
        self._owns_ahttp = async_http_client is None
        self._lock = threading.Lock()
        self._alock = asyncio.Lock()

    @property
    def jwks_fetches(self) -> int:
        """How many JWKS fetches were made (observability, tests)."""
        return self._core.jwks.completed if self._core.jwks else 0

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; raises :class:`InvalidToken` otherwise."""
        return run_flow(self._core.verify(token), self._fetch)

    async def averify(self, token: str) -> Principal:
        return await arun_flow(self._core.verify(token), self._afetch)

    # One fetch at a time, each under the lock until its document is applied: requests that decided to
    # fetch at the same moment find the work done (``jwks_wanted`` False) instead of fetching again.

    def _fetch(self, op: FetchJWKS) -> None:
        with self._lock:
            if not self._core.jwks_wanted(op):
                return
            if self._http is None:
                self._http = httpx.Client(follow_redirects=False)
            try:
                document: Any = _document(self._http.get(op.url, timeout=op.timeout))
            except _FETCH_ERRORS as exc:
                document = exc
            self._core.jwks_arrived(document)

    async def _afetch(self, op: FetchJWKS) -> None:
        async with self._alock:
            if not self._core.jwks_wanted(op):
                return
            if self._ahttp is None:
                self._ahttp = httpx.AsyncClient(follow_redirects=False)
            try:
                document: Any = _document(await self._ahttp.get(op.url, timeout=op.timeout))
            except _FETCH_ERRORS as exc:
                document = exc
            self._core.jwks_arrived(document)

    def close(self) -> None:
        if self._http is not None and self._owns_http:
            self._http.close()
            self._http = None

    async def aclose(self) -> None:
        self.close()
        if self._ahttp is not None and self._owns_ahttp:
            await self._ahttp.aclose()
            self._ahttp = None
