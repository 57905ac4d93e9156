"""Key pairs, token minting and a JWKS document served from a loopback HTTP server."""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

TEST_ISSUER = "https://idp.test/"
TEST_AUDIENCE = "llmproxy"
TEST_HS_SECRET = "s" * 64
TEST_TENANT = "11111111-2222-4333-8444-555555555555"


@dataclass(frozen=True)
class KeyPair:
    """A private key, its public PEM, and the ``kid`` tokens signed with it carry."""

    private: Any
    public_pem: str
    kid: str

    def jwk(self, alg: str) -> dict[str, Any]:
        """The public key as a JWK (``use=sig``, with ``kid`` and ``alg``)."""
        data: dict[str, Any] = json.loads(jwt.get_algorithm_by_name(alg).to_jwk(self.private.public_key()))
        data.update(kid=self.kid, use="sig", alg=alg)
        return data

    def with_kid(self, kid: str) -> KeyPair:
        return KeyPair(self.private, self.public_pem, kid)


def _public_pem(private: Any) -> str:
    pem: bytes = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


def generate_rsa_key(kid: str = "rsa-1", bits: int = 2048) -> KeyPair:
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return KeyPair(private, _public_pem(private), kid)


def generate_ec_key(kid: str = "ec-1") -> KeyPair:
    private = ec.generate_private_key(ec.SECP256R1())
    return KeyPair(private, _public_pem(private), kid)


def mint_token(
    key: KeyPair | bytes | str,
    alg: str = "RS256",
    *,
    now: float,
    lifetime: float = 3600,
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A signed token valid for ``lifetime`` seconds from ``now``, with test issuer, audience, tenant, a
    ``tenant_admin`` role and the ``api:access`` scope. Override any claim; None leaves a claim out."""
    payload: dict[str, Any] = {
        "iss": TEST_ISSUER,
        "aud": TEST_AUDIENCE,
        "sub": "user-42",
        "tenant_id": TEST_TENANT,
        "roles": ["tenant_admin"],
        "scope": "api:access models:read",
        "iat": int(now),
        "exp": int(now + lifetime),
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    header: dict[str, Any] = {"kid": key.kid} if isinstance(key, KeyPair) else {}
    header.update(headers or {})
    signing_key = key.private if isinstance(key, KeyPair) else key
    return jwt.encode(payload, signing_key, algorithm=alg, headers=header)


def b64url(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class JWKSServer:
    """Serves ``document`` as JSON on a loopback port (any path); counts the requests it answered.

    Use as a context manager, or ``start()`` / ``stop()``.
    """

    document: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    status: int = 200
    requests: int = 0
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/.well-known/jwks.json"

    def publish(self, *keys: dict[str, Any]) -> None:
        self.document = {"keys": list(keys)}

    def start(self) -> JWKSServer:
        state = self

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

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="jwks-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> JWKSServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
