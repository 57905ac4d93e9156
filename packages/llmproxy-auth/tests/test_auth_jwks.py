"""JWKS: keys fetched from a loopback server, cached, refreshed on an unknown kid (rate-limited), rotated."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from llmproxy.auth import AuthUnavailable, InvalidToken, JWTSettings, JWTVerifier
from llmproxy.auth.testing import TEST_AUDIENCE, TEST_ISSUER, TEST_TENANT, JWKSServer, KeyPair
from llmproxy.core import ManualClock

Mint = Callable[..., str]


def _verifier(server: JWKSServer, clock: ManualClock, **overrides: object) -> JWTVerifier:
    options: dict[str, object] = {
        "issuer": TEST_ISSUER,
        "audience": TEST_AUDIENCE,
        "algorithms": ("RS256", "ES256"),
        "jwks_url": server.url,
        "jwks_min_refresh_interval": 30.0,
        "jwks_cache_ttl": 300.0,
    }
    options.update(overrides)
    return JWTVerifier(JWTSettings(**options), clock=clock)  # type: ignore[arg-type]


def test_token_is_verified_with_a_key_from_the_jwks(
    jwks_server: JWKSServer, rsa_key: KeyPair, mint: Mint, manual_clock: ManualClock
) -> None:
    jwks_server.publish(rsa_key.jwk("RS256"))
    verifier = _verifier(jwks_server, manual_clock)
    try:
        assert verifier.verify(mint(rsa_key)).tenant_id == TEST_TENANT
        assert jwks_server.requests == 1
    finally:
        verifier.close()


def test_the_jwks_is_cached_between_tokens(
    jwks_server: JWKSServer, rsa_key: KeyPair, mint: Mint, manual_clock: ManualClock
) -> None:
    jwks_server.publish(rsa_key.jwk("RS256"))
    verifier = _verifier(jwks_server, manual_clock, token_cache_size=0)
    try:
        for sub in ("a", "b", "c"):
            verifier.verify(mint(rsa_key, sub=sub))
        assert jwks_server.requests == 1
    finally:
        verifier.close()


def test_rotation_a_new_kid_triggers_a_refresh_and_is_accepted(
    jwks_server: JWKSServer, rsa_key: KeyPair, rsa_key_2: KeyPair, mint: Mint, manual_clock: ManualClock
) -> None:
    jwks_server.publish(rsa_key.jwk("RS256"))
    verifier = _verifier(jwks_server, manual_clock)
    try:
        verifier.verify(mint(rsa_key))
        jwks_server.publish(rsa_key.jwk("RS256"), rsa_key_2.jwk("RS256"))  # the IdP rotates in a new key
        manual_clock.advance(30)

        assert verifier.verify(mint(rsa_key_2)).tenant_id == TEST_TENANT
        assert jwks_server.requests == 2
    finally:
        verifier.close()


def test_rotation_a_retired_key_stops_verifying_after_the_cache_ttl(
    jwks_server: JWKSServer, rsa_key: KeyPair, rsa_key_2: KeyPair, mint: Mint, manual_clock: ManualClock
) -> None:
    jwks_server.publish(rsa_key.jwk("RS256"), rsa_key_2.jwk("RS256"))
    verifier = _verifier(jwks_server, manual_clock, token_cache_size=0)
    try:
        verifier.verify(mint(rsa_key))
        jwks_server.publish(rsa_key_2.jwk("RS256"))
        manual_clock.advance(300)

        with pytest.raises(InvalidToken):
            verifier.verify(mint(rsa_key))
    finally:
        verifier.close()


def test_unknown_kids_do_not_refetch_more_than_once_per_min_refresh_interval(
    jwks_server: JWKSServer, rsa_key: KeyPair, mint: Mint, manual_clock: ManualClock
) -> None:
    jwks_server.publish(rsa_key.jwk("RS256"))
    verifier = _verifier(jwks_server, manual_clock)
    try:
        verifier.verify(mint(rsa_key))
        for i in range(20):
            with pytest.raises(InvalidToken):
                verifier.verify(mint(rsa_key.with_kid(f"random-{i}")))
        assert jwks_server.requests == 1

        manual_clock.advance(30)
        with pytest.raises(InvalidToken):
            verifier.verify(mint(rsa_key.with_kid("random-x")))
        assert jwks_server.requests == 2
    finally:
        verifier.close()


def test_jwks_unreachable_with_no_keys_cached_is_auth_unavailable(
    jwks_server: JWKSServer, rsa_key: KeyPair, mint: Mint, manual_clock: ManualClock
) -> None:
    jwks_server.status = 500
    verifier = _verifier(jwks_server, manual_clock)
    try:
        with pytest.raises(AuthUnavailable):
            verifier.verify(mint(rsa_key))
    finally:
        verifier.close()


def test_jwks_outage_keeps_the_keys_already_fetched(
    jwks_server: JWKSServer, rsa_key: KeyPair, mint: Mint, manual_clock: ManualClock
) -> None:
    jwks_server.publish(rsa_key.jwk("RS256"))
    verifier = _verifier(jwks_server, manual_clock, token_cache_size=0)
    try:
        verifier.verify(mint(rsa_key))
        jwks_server.status = 503
        manual_clock.advance(301)

        assert verifier.verify(mint(rsa_key, sub="later")).user_id == "later"
    finally:
        verifier.close()


def test_hmac_keys_in_a_jwks_are_ignored(
    jwks_server: JWKSServer, mint: Mint, manual_clock: ManualClock
) -> None:
    secret = b"k" * 64
    jwks_server.publish({"kty": "oct", "kid": "hs", "k": "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2tr"})
    verifier = _verifier(
        jwks_server, manual_clock, algorithms=("RS256", "HS256"), keys={"static-hs": "x" * 64}
    )
    try:
        with pytest.raises(InvalidToken):
            verifier.verify(mint(secret, "HS256", headers={"kid": "hs"}))
    finally:
        verifier.close()


def test_a_kid_less_token_is_verified_when_exactly_one_key_fits(
    jwks_server: JWKSServer, rsa_key: KeyPair, ec_key: KeyPair, mint: Mint, manual_clock: ManualClock
) -> None:
    jwks_server.publish(rsa_key.jwk("RS256"), ec_key.jwk("ES256"))
    verifier = _verifier(jwks_server, manual_clock)
    try:
        assert verifier.verify(mint(rsa_key.private, "RS256")).tenant_id == TEST_TENANT
    finally:
        verifier.close()


async def test_async_verification_fetches_the_jwks_with_an_async_client(
    jwks_server: JWKSServer, rsa_key: KeyPair, ec_key: KeyPair, mint: Mint, manual_clock: ManualClock
) -> None:
    jwks_server.publish(ec_key.jwk("ES256"))
    verifier = _verifier(jwks_server, manual_clock)
    try:
        assert (await verifier.averify(mint(ec_key, "ES256"))).tenant_id == TEST_TENANT
        assert jwks_server.requests == 1
        assert verifier.jwks_fetches == 1
    finally:
        await verifier.aclose()


async def test_concurrent_first_requests_share_one_jwks_fetch(
    jwks_server: JWKSServer, rsa_key: KeyPair, mint: Mint, manual_clock: ManualClock
) -> None:
    jwks_server.publish(rsa_key.jwk("RS256"))
    verifier = _verifier(jwks_server, manual_clock)
    try:
        results = await asyncio.gather(*(verifier.averify(mint(rsa_key, sub=f"u{i}")) for i in range(10)))

        assert {p.user_id for p in results} == {f"u{i}" for i in range(10)}
        assert jwks_server.requests == 1
    finally:
        await verifier.aclose()


def test_a_failed_first_load_is_retried_after_a_second_not_the_refresh_interval(
    jwks_server: JWKSServer, rsa_key: KeyPair, mint: Mint, manual_clock: ManualClock
) -> None:
    jwks_server.status = 503
    verifier = _verifier(jwks_server, manual_clock)
    try:
        with pytest.raises(AuthUnavailable):
            verifier.verify(mint(rsa_key))
        with pytest.raises(AuthUnavailable):
            verifier.verify(mint(rsa_key))
        assert jwks_server.requests == 1

        jwks_server.status = 200
        jwks_server.publish(rsa_key.jwk("RS256"))
        manual_clock.advance(1.0)

        assert verifier.verify(mint(rsa_key)).tenant_id == TEST_TENANT
    finally:
        verifier.close()
