"""Fixtures for llmproxy-auth tests: key pairs, token minting, a JWKS server, tenants, key services."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from llmproxy.auth import ApiKeyService, AsyncApiKeyService
from llmproxy.auth.testing import JWKSServer, KeyPair, generate_ec_key, generate_rsa_key, mint_token
from llmproxy.core import ManualClock, TenantRegistry, create_engine
from llmproxy.core.testing.plugin import Backend


@pytest.fixture(scope="session")
def rsa_key() -> KeyPair:
    return generate_rsa_key("rsa-1")


@pytest.fixture(scope="session")
def rsa_key_2() -> KeyPair:
    return generate_rsa_key("rsa-2")


@pytest.fixture(scope="session")
def ec_key() -> KeyPair:
    return generate_ec_key("ec-1")


@pytest.fixture
def mint(manual_clock: ManualClock) -> Callable[..., str]:
    """``mint(key, alg="RS256", headers=..., **claims)``: a token valid for an hour from the manual clock."""

    def make(key: Any, alg: str = "RS256", **kwargs: Any) -> str:
        return mint_token(key, alg, now=manual_clock.now(), **kwargs)

    return make


@pytest.fixture
def jwks_server() -> Iterator[JWKSServer]:
    with JWKSServer() as server:
        yield server


@pytest.fixture
def tenant_id(backend: Backend) -> uuid.UUID:
    """A tenant in the (parametrized) backend's migrated database."""
    engine = create_engine(backend.database_url)
    try:
        return TenantRegistry(engine).create(f"tenant-{uuid.uuid4().hex[:8]}").id
    finally:
        engine.dispose()


@pytest.fixture
def keys(backend: Backend, manual_clock: ManualClock) -> Iterator[ApiKeyService]:
    """A sync key service on the (parametrized) backend, on the manual clock."""
    service = ApiKeyService.from_urls(backend.redis_url, backend.database_url, clock=manual_clock)
    yield service
    service.close()


@pytest.fixture
async def api_keys(backend: Backend, manual_clock: ManualClock) -> AsyncIterator[AsyncApiKeyService]:
    """The asyncio twin of ``keys``."""
    service = AsyncApiKeyService.from_urls(backend.redis_url, backend.database_url, clock=manual_clock)
    yield service
    await service.aclose()


@pytest.fixture
def akeys(api_keys: AsyncApiKeyService) -> AsyncApiKeyService:
    """``api_keys`` under the name the asyncio service's own tests use."""
    return api_keys
