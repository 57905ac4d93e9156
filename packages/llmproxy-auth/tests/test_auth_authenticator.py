"""The Authenticator routes a bearer token to the API key service or the JWT verifier."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import pytest

from llmproxy.auth import (
    ApiKeyService,
    AsyncApiKeyService,
    Authenticator,
    InvalidApiKey,
    InvalidToken,
    JWTSettings,
    JWTVerifier,
    MissingCredentials,
    bearer_token,
)
from llmproxy.auth.testing import TEST_AUDIENCE, TEST_HS_SECRET, TEST_ISSUER, TEST_TENANT, KeyPair
from llmproxy.core import ManualClock
from llmproxy.core.testing.plugin import Backend

Mint = Callable[..., str]


@pytest.fixture
def verifier(rsa_key: KeyPair, manual_clock: ManualClock) -> JWTVerifier:
    settings = JWTSettings(issuer=TEST_ISSUER, audience=TEST_AUDIENCE, keys={rsa_key.kid: rsa_key.public_pem})
    return JWTVerifier(settings, clock=manual_clock)


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("BEARER abc", "abc"), (b"Bearer abc", "abc")],
)
def test_bearer_token_is_read_case_insensitively(header: str | bytes, token: str) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize("header", [None, "", "   "])
def test_no_header_is_missing_credentials(header: str | None) -> None:
    with pytest.raises(MissingCredentials):
        bearer_token(header)


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Token abc"])
def test_other_schemes_are_invalid(header: str) -> None:
    with pytest.raises(InvalidToken):
        bearer_token(header)


def test_api_key_and_jwt_each_reach_their_verifier(
    keys: ApiKeyService, verifier: JWTVerifier, tenant_id: uuid.UUID, mint: Mint, rsa_key: KeyPair
) -> None:
    authenticator = Authenticator(jwt=verifier, api_keys=keys)
    created = keys.create(tenant_id, "k")

    assert authenticator.authenticate(created.secret).kind == "api_key"
    assert authenticator.authenticate_header(f"Bearer {mint(rsa_key)}").kind == "jwt"


async def test_async_authentication_runs_a_sync_key_service_in_a_thread(
    keys: ApiKeyService, tenant_id: uuid.UUID
) -> None:
    created = keys.create(tenant_id, "k")
    principal = await Authenticator(api_keys=keys).aauthenticate(created.secret)
    assert principal.api_key_id == str(created.key.id)


async def test_sync_authentication_with_an_async_key_service_is_a_usage_error(
    backend: Backend, manual_clock: ManualClock
) -> None:
    service = AsyncApiKeyService.from_urls(backend.redis_url, backend.database_url, clock=manual_clock)
    try:
        with pytest.raises(TypeError, match="aauthenticate"):
            Authenticator(api_keys=service).authenticate("sk-llmp-" + "A" * 43)
    finally:
        await service.aclose()


def test_without_a_key_service_api_keys_are_refused(verifier: JWTVerifier) -> None:
    with pytest.raises(InvalidApiKey):
        Authenticator(jwt=verifier).authenticate("sk-llmp-" + "A" * 43)


def test_without_a_jwt_verifier_other_tokens_are_refused(
    keys: ApiKeyService, mint: Mint, rsa_key: KeyPair
) -> None:
    with pytest.raises(InvalidApiKey):
        Authenticator(api_keys=keys).authenticate(mint(rsa_key))


def test_an_authenticator_needs_something_to_verify_with() -> None:
    with pytest.raises(ValueError):
        Authenticator()


def test_jwt_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMPROXY_JWT_ISSUER", "https://idp.example/")
    monkeypatch.setenv("LLMPROXY_JWT_ALGORITHMS", '["HS256"]')
    monkeypatch.setenv("LLMPROXY_JWT_KEYS", f'{{"hs": "{TEST_HS_SECRET}"}}')

    settings = JWTSettings()

    assert (settings.issuer, settings.algorithms, list(settings.keys)) == (
        "https://idp.example/",
        ("HS256",),
        ["hs"],
    )


def test_threads_verifying_at_once_all_get_the_same_principal(
    keys: ApiKeyService, verifier: JWTVerifier, tenant_id: uuid.UUID, mint: Mint, rsa_key: KeyPair
) -> None:
    authenticator = Authenticator(jwt=verifier, api_keys=keys)
    secret, token = keys.create(tenant_id, "k").secret, mint(rsa_key)
    seen: list[tuple[str, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            for _ in range(50):
                a, b = authenticator.authenticate(secret), authenticator.authenticate(token)
                with lock:
                    seen.append((a.tenant_id, b.tenant_id))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert set(seen) == {(str(tenant_id), TEST_TENANT)}
    assert len(seen) == 400
