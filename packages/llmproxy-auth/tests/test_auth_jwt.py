"""JWT verification with static keys: what is accepted, and everything that must be refused."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

import jwt
import pytest
from pydantic import ValidationError

from llmproxy.auth import InvalidToken, JWTSettings, JWTVerifier, TokenExpired
from llmproxy.auth.testing import TEST_AUDIENCE as AUDIENCE
from llmproxy.auth.testing import TEST_HS_SECRET as HS_SECRET
from llmproxy.auth.testing import TEST_ISSUER as ISSUER
from llmproxy.auth.testing import TEST_TENANT as TENANT
from llmproxy.auth.testing import JWKSServer, KeyPair, b64url
from llmproxy.core import ManualClock


@pytest.fixture
def verifier(rsa_key: KeyPair, ec_key: KeyPair, manual_clock: ManualClock) -> JWTVerifier:
    settings = JWTSettings(
        issuer=ISSUER,
        audience=AUDIENCE,
        algorithms=("RS256", "ES256", "HS256"),
        keys={rsa_key.kid: rsa_key.public_pem, ec_key.kid: ec_key.public_pem, "hs": HS_SECRET},
    )
    return JWTVerifier(settings, clock=manual_clock)


Mint = Callable[..., str]
_b64 = b64url


# -- accepted -----------------------------------------------------------------------------------------------


def test_rs256_token_becomes_a_principal(verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair) -> None:
    principal = verifier.verify(mint(rsa_key, "RS256"))

    assert principal.kind == "jwt"
    assert principal.tenant_id == TENANT
    assert principal.user_id == "user-42"
    assert principal.roles == {"tenant_admin"}
    assert principal.scopes == {"api:access", "models:read"}
    assert principal.api_key_id is None
    assert principal.claims["iss"] == ISSUER


def test_es256_token_becomes_a_principal(verifier: JWTVerifier, mint: Mint, ec_key: KeyPair) -> None:
    assert verifier.verify(mint(ec_key, "ES256")).tenant_id == TENANT


def test_hs256_token_with_the_configured_secret_becomes_a_principal(
    verifier: JWTVerifier, mint: Mint
) -> None:
    token = mint(HS_SECRET.encode(), "HS256", headers={"kid": "hs"})
    assert verifier.verify(token).user_id == "user-42"


def test_scopes_may_be_a_list_claim_and_claim_names_are_configurable(
    rsa_key: KeyPair, mint: Mint, manual_clock: ManualClock
) -> None:
    settings = JWTSettings(
        issuer=ISSUER,
        audience=AUDIENCE,
        keys={rsa_key.kid: rsa_key.public_pem},
        tenant_claim="https://example.com/tenant",
        user_claim="email",
        roles_claim="groups",
        scopes_claim="scp",
    )
    token = mint(
        rsa_key,
        **{
            "https://example.com/tenant": TENANT,
            "email": "a@b.c",
            "groups": "tenant_admin ops",
            "scp": ["x", "y"],
        },
    )

    principal = JWTVerifier(settings, clock=manual_clock).verify(token)

    assert principal.user_id == "a@b.c"
    assert principal.roles == {"tenant_admin", "ops"}
    assert principal.scopes == {"x", "y"}


def test_expiry_within_the_default_60_second_skew_is_accepted(
    verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair, manual_clock: ManualClock
) -> None:
    token = mint(rsa_key, exp=int(manual_clock.now()) - 59)
    assert verifier.verify(token).tenant_id == TENANT


def test_not_before_within_the_skew_is_accepted(
    verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair, manual_clock: ManualClock
) -> None:
    token = mint(rsa_key, nbf=int(manual_clock.now()) + 59)
    assert verifier.verify(token).tenant_id == TENANT


def test_a_repeated_token_is_served_from_the_cache_until_it_expires(
    verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair, manual_clock: ManualClock
) -> None:
    token = mint(rsa_key, exp=int(manual_clock.now()) + 100)
    first = verifier.verify(token)
    assert verifier.verify(token) is first

    manual_clock.advance(100 + 61)

    with pytest.raises(TokenExpired):
        verifier.verify(token)


# -- refused ------------------------------------------------------------------------------------------------


def test_expired_token_is_refused(
    verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair, manual_clock: ManualClock
) -> None:
    with pytest.raises(TokenExpired):
        verifier.verify(mint(rsa_key, exp=int(manual_clock.now()) - 61))


def test_token_not_yet_valid_is_refused(
    verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair, manual_clock: ManualClock
) -> None:
    with pytest.raises(InvalidToken, match="not valid yet"):
        verifier.verify(mint(rsa_key, nbf=int(manual_clock.now()) + 61))


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_time_claims_are_refused(
    verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair, claim: str, value: float
) -> None:
    with pytest.raises(InvalidToken, match=f"'{claim}' must be a finite number"):
        verifier.verify(mint(rsa_key, **{claim: value}))


def test_token_without_exp_is_refused(verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair) -> None:
    with pytest.raises(InvalidToken, match="exp"):
        verifier.verify(mint(rsa_key, exp=None))


def test_wrong_issuer_is_refused(verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(mint(rsa_key, iss="https://evil.test/"))


def test_wrong_audience_is_refused(verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(mint(rsa_key, aud="someone-else"))


def test_bad_signature_is_refused(
    verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair, rsa_key_2: KeyPair
) -> None:
    forged = mint(rsa_key_2.with_kid(rsa_key.kid))  # other key, same kid
    with pytest.raises(InvalidToken):
        verifier.verify(forged)


def test_tampered_payload_is_refused(verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair) -> None:
    head, _, sig = mint(rsa_key).split(".")
    other = _b64(
        {"iss": ISSUER, "aud": AUDIENCE, "tenant_id": TENANT, "roles": ["tenant_admin"], "exp": 2**40}
    )
    with pytest.raises(InvalidToken):
        verifier.verify(f"{head}.{other}.{sig}")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused(verifier: JWTVerifier, manual_clock: ManualClock, alg: str) -> None:
    payload = {"iss": ISSUER, "aud": AUDIENCE, "tenant_id": TENANT, "exp": int(manual_clock.now()) + 60}
    token = f"{_b64({'alg': alg, 'typ': 'JWT'})}.{_b64(payload)}."
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_hs256_signed_with_the_rsa_public_key_is_refused(
    verifier: JWTVerifier, rsa_key: KeyPair, manual_clock: ManualClock
) -> None:
    # The classic confusion attack: HMAC "signed" with the public PEM, which an attacker knows.
    payload = {"iss": ISSUER, "aud": AUDIENCE, "tenant_id": TENANT, "exp": int(manual_clock.now()) + 60}
    signing_input = f"{_b64({'alg': 'HS256', 'kid': rsa_key.kid})}.{_b64(payload)}".encode()
    hs = jwt.get_algorithm_by_name("HS256")
    signature = hs.sign(signing_input, rsa_key.public_pem.encode())
    with pytest.raises(InvalidToken):
        verifier.verify(f"{signing_input.decode()}.{_b64(signature)}")


def test_algorithm_outside_the_allow_list_is_refused(
    rsa_key: KeyPair, mint: Mint, manual_clock: ManualClock
) -> None:
    only_es = JWTVerifier(
        JWTSettings(issuer=ISSUER, audience=AUDIENCE, algorithms=("ES256",), keys={"x": rsa_key.public_pem}),
        clock=manual_clock,
    )
    with pytest.raises(InvalidToken, match="algorithm"):
        only_es.verify(mint(rsa_key, "RS256"))


def test_unknown_kid_is_refused(verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair) -> None:
    with pytest.raises(InvalidToken, match="No key"):
        verifier.verify(mint(rsa_key.with_kid("not-configured")))


def test_eight_kilobytes_of_garbage_is_refused(verifier: JWTVerifier) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(base64.urlsafe_b64encode(os.urandom(6 * 1024)).decode())


@pytest.mark.parametrize(
    "token",
    [
        "a.b.c",
        "not-a-jwt",
        "..",
        "e30.e30.",  # {} header: no alg
        f"{_b64(b'[1, 2]')}.e30.",
        f"{_b64(b'not json')}.e30.sig",
        f"{_b64({'alg': 'RS256', 'kid': 5})}.e30.sig",
        f"{_b64({'alg': ['RS256']})}.e30.sig",
        "\u00e9\u00e9.\u00e9.\u00e9",
    ],
)
def test_malformed_header_is_refused(verifier: JWTVerifier, token: str) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_token_without_a_tenant_is_refused(verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair) -> None:
    with pytest.raises(InvalidToken, match="tenant_id"):
        verifier.verify(mint(rsa_key, tenant_id=None))


def test_token_with_a_tenant_that_is_not_a_uuid_is_refused(
    verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair
) -> None:
    with pytest.raises(InvalidToken, match="tenant_id"):
        verifier.verify(mint(rsa_key, tenant_id="acme"))


def test_roles_claim_of_the_wrong_type_is_refused(
    verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair
) -> None:
    with pytest.raises(InvalidToken, match="roles"):
        verifier.verify(mint(rsa_key, roles={"admin": True}))


def test_tokens_from_a_jku_header_are_never_fetched(
    verifier: JWTVerifier, mint: Mint, rsa_key_2: KeyPair, jwks_server: JWKSServer
) -> None:
    jwks_server.publish(rsa_key_2.jwk("RS256"))
    token = mint(rsa_key_2, headers={"jku": jwks_server.url, "x5u": jwks_server.url})

    with pytest.raises(InvalidToken):
        verifier.verify(token)
    assert jwks_server.requests == 0


# -- configuration ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithms", [("none",), ("RS256", "none"), (), ("XX999",)])
def test_settings_refuse_bad_algorithm_lists(algorithms: tuple[str, ...], rsa_key: KeyPair) -> None:
    with pytest.raises(ValidationError):
        JWTSettings(algorithms=algorithms, keys={"k": rsa_key.public_pem})


def test_settings_refuse_a_short_hmac_secret() -> None:
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        JWTSettings(algorithms=("HS256",), keys={"k": "too-short"})


def test_settings_refuse_a_private_key(rsa_key: KeyPair) -> None:
    from cryptography.hazmat.primitives import serialization

    pem = rsa_key.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with pytest.raises(ValidationError, match="public key"):
        JWTSettings(keys={"k": pem})


def test_settings_need_a_key_source() -> None:
    with pytest.raises(ValidationError, match="jwks_url or keys"):
        JWTSettings(issuer=ISSUER)


def test_settings_refuse_plain_http_jwks_off_loopback() -> None:
    with pytest.raises(ValidationError, match="https"):
        JWTSettings(jwks_url="http://idp.example.com/jwks.json")


def test_audience_list_containing_ours_is_accepted(
    verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair
) -> None:
    assert verifier.verify(mint(rsa_key, aud=["other", AUDIENCE])).tenant_id == TENANT


def test_token_without_audience_is_refused_when_one_is_configured(
    verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair
) -> None:
    with pytest.raises(InvalidToken, match="audience"):
        verifier.verify(mint(rsa_key, aud=None))


def test_token_naming_an_audience_is_refused_when_none_is_configured(
    rsa_key: KeyPair, mint: Mint, manual_clock: ManualClock
) -> None:
    no_audience = JWTVerifier(JWTSettings(keys={rsa_key.kid: rsa_key.public_pem}), clock=manual_clock)
    with pytest.raises(InvalidToken, match="audience"):
        no_audience.verify(mint(rsa_key))


@pytest.mark.parametrize("extra", [{"crit": ["exp"]}, {"b64": False}])
def test_critical_or_unencoded_payload_headers_are_refused(
    verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair, extra: dict[str, object]
) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(mint(rsa_key, headers=extra))


def test_signature_over_a_different_header_is_refused(
    verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair
) -> None:
    _, payload, sig = mint(rsa_key).split(".")
    other_header = _b64({"alg": "RS256", "kid": rsa_key.kid, "typ": "JWT", "x": 1})
    with pytest.raises(InvalidToken):
        verifier.verify(f"{other_header}.{payload}.{sig}")


# -- the verifier's construction and its flow ---------------------------------------------------------------


def test_the_verifier_takes_settings_with_keyword_overrides(
    verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair, manual_clock: ManualClock
) -> None:
    strict = JWTVerifier(verifier.settings, clock=manual_clock, leeway=0)
    token = mint(rsa_key, exp=manual_clock.now() - 1)

    assert strict.settings.leeway == 0
    assert strict.settings.keys == verifier.settings.keys
    assert verifier.verify(token).tenant_id == TENANT  # within the default 60 s
    with pytest.raises(TokenExpired):
        strict.verify(token)


def test_a_bad_override_is_refused_naming_it(verifier: JWTVerifier) -> None:
    with pytest.raises(ValidationError, match="leeway"):
        JWTVerifier(verifier.settings, leeway=-1)
    with pytest.raises(ValidationError, match="leway"):
        JWTVerifier(verifier.settings, leway=1)


def test_without_settings_the_verifier_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch, mint: Mint, manual_clock: ManualClock
) -> None:
    monkeypatch.setenv("LLMPROXY_JWT_ALGORITHMS", '["HS256"]')
    monkeypatch.setenv("LLMPROXY_JWT_KEYS", f'{{"hs": "{HS_SECRET}"}}')

    verifier = JWTVerifier(clock=manual_clock, issuer=ISSUER, audience=AUDIENCE)

    assert verifier.verify(mint(HS_SECRET.encode(), "HS256", headers={"kid": "hs"})).tenant_id == TENANT


def test_a_cached_token_is_answered_without_a_flow(
    verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair
) -> None:
    token = mint(rsa_key)
    first = verifier.verify(token)

    assert verifier._core.verify(token) is first
