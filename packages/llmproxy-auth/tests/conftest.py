"""Fixtures for llmproxy-auth tests: key pairs, token minting, a loopback JWKS server, tenants."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from llmproxy.core import ManualClock, TenantRegistry, create_engine
from llmproxy.core.testing.plugin import Backend

ISSUER = "https://idp.test/"
AUDIENCE = "llmproxy"
HS_SECRET = "s" * 64
TENANT = str(uuid.UUID("11111111-2222-4333-8444-555555555555"))


@dataclass(frozen=True)
class KeyPair:
    private: Any
    public_pem: str
    kid: str

    def jwk(self, alg: str) -> dict[str, Any]:
        algo = jwt.get_algorithm_by_name(alg)
        data: dict[str, Any] = json.loads(algo.to_jwk(self.private.public_key()))
        data.update(kid=self.kid, use="sig", alg=alg)
        return data


def _pem(private: Any) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="session")
def rsa_key() -> KeyPair:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return KeyPair(private, _pem(private), "rsa-1")


@pytest.fixture(scope="session")
def rsa_key_2() -> KeyPair:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return KeyPair(private, _pem(private), "rsa-2")


@pytest.fixture(scope="session")
def ec_key() -> KeyPair:
    private = ec.generate_private_key(ec.SECP256R1())
    return KeyPair(private, _pem(private), "ec-1")


Mint = Callable[..., str]


@pytest.fixture
def mint(manual_clock: ManualClock) -> Mint:
    """``mint(key, alg="RS256", **claim_overrides)``: a token valid for an hour at the manual clock's time.
    A claim set to None is left out; ``headers=`` adds header fields."""

    def make(key: Any, alg: str = "RS256", *, headers: dict[str, Any] | None = None, **claims: Any) -> str:
        now = int(manual_clock.now())
        payload: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "user-42",
            "tenant_id": TENANT,
            "roles": ["tenant_admin"],
            "scope": "api:access models:read",
            "iat": now,
            "exp": now + 3600,
        }
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        signing_key = key.private if isinstance(key, KeyPair) else key
        head = {"kid": key.kid} if isinstance(key, KeyPair) else {}
        head.update(headers or {})
        return jwt.encode(payload, signing_key, algorithm=alg, headers=head)

    return make


@dataclass
class JWKSServer:
    """A JWKS document served on a loopback port; counts requests."""

    document: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    status: int = 200
    requests: int = 0
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"

    def publish(self, *keys: dict[str, Any]) -> None:
        self.document = {"keys": list(keys)}


@pytest.fixture
def jwks_server() -> Iterator[JWKSServer]:
    state = JWKSServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests += 1
            body = json.dumps(state.document).encode()
            self.send_response(state.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    state.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=state.server.serve_forever, daemon=True)
    thread.start()
    yield state
    state.server.shutdown()
    state.server.server_close()
    thread.join()


@pytest.fixture
def tenant_id(backend: Backend) -> uuid.UUID:
    """A tenant in the (parametrized) backend's migrated database."""
    engine = create_engine(backend.database_url)
    try:
        return TenantRegistry(engine).create(f"tenant-{uuid.uuid4().hex[:8]}").id
    finally:
        engine.dispose()
