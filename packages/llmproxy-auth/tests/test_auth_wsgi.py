"""WSGI middleware and guard: the same answers as the ASGI twin, through the sync services."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import httpx
import pytest

from llmproxy.auth import (
    ApiAccess,
    ApiKeyService,
    Authenticator,
    AuthWSGIMiddleware,
    JWTSettings,
    JWTVerifier,
    PolicyDenied,
    SameTenant,
    WSGIPolicyGuard,
)
from llmproxy.auth.testing import TEST_AUDIENCE, TEST_ISSUER, TEST_TENANT, KeyPair
from llmproxy.core import ManualClock, StartResponse, WSGIEnviron, context_from_environ, current_context

Mint = Callable[..., str]


def inner_app(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
    ctx = context_from_environ(environ)
    assert ctx is not None
    assert current_context() is ctx
    if environ["PATH_INFO"] == "/admin-only":
        raise PolicyDenied("You are not allowed to do this.")
    start_response("200 OK", [("content-type", "application/json")])
    tenant = ctx.tenant_id and str(ctx.tenant_id)
    return [json.dumps({"tenant": tenant, "key": ctx.api_key_id, "user": ctx.user_id}).encode()]


@pytest.fixture
def authenticator(keys: ApiKeyService, rsa_key: KeyPair, manual_clock: ManualClock) -> Authenticator:
    settings = JWTSettings(issuer=TEST_ISSUER, audience=TEST_AUDIENCE, keys={rsa_key.kid: rsa_key.public_pem})
    return Authenticator(jwt=JWTVerifier(settings, clock=manual_clock), api_keys=keys)


@pytest.fixture
def client(authenticator: Authenticator) -> httpx.Client:
    app = AuthWSGIMiddleware(inner_app, authenticator=authenticator, public_prefixes=("/public/",))
    return httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://gw")


def test_wsgi_valid_api_key_sets_the_context(
    client: httpx.Client, keys: ApiKeyService, tenant_id: uuid.UUID
) -> None:
    created = keys.create(tenant_id, "k")

    response = client.get("/v1/x", headers={"authorization": f"Bearer {created.secret}"})

    assert response.status_code == 200
    assert response.json() == {"tenant": str(tenant_id), "key": str(created.key.id), "user": None}


def test_wsgi_valid_jwt_sets_the_context(client: httpx.Client, mint: Mint, rsa_key: KeyPair) -> None:
    response = client.get("/v1/x", headers={"authorization": f"Bearer {mint(rsa_key)}"})
    assert response.json() == {"tenant": TEST_TENANT, "key": None, "user": "user-42"}


def test_wsgi_missing_credentials_are_401(client: httpx.Client) -> None:
    response = client.get("/v1/x")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_credentials"
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_wsgi_public_prefix_passes_anonymously(client: httpx.Client) -> None:
    response = client.get("/public/logo")
    assert response.status_code == 200
    assert response.json()["tenant"] is None


def test_wsgi_policy_denied_by_the_app_is_403(client: httpx.Client, mint: Mint, rsa_key: KeyPair) -> None:
    response = client.get("/admin-only", headers={"authorization": f"Bearer {mint(rsa_key)}"})
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"


def routed(tenant: str) -> Callable[[WSGIEnviron, StartResponse], Iterable[bytes]]:
    def app(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        environ["wsgiorg.routing_args"] = ((), {"tenant_id": tenant})
        return WSGIPolicyGuard(inner_app, ApiAccess() & SameTenant())(environ, start_response)

    return app


@pytest.mark.parametrize(("route_tenant", "status"), [(TEST_TENANT, 200), (str(uuid.uuid4()), 403)])
def test_wsgi_policy_guard_reads_wsgiorg_routing_args(
    authenticator: Authenticator, mint: Mint, rsa_key: KeyPair, route_tenant: str, status: int
) -> None:
    app = AuthWSGIMiddleware(routed(route_tenant), authenticator=authenticator)
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://gw") as c:
        response = c.get("/v1/x", headers={"authorization": f"Bearer {mint(rsa_key)}"})
    assert response.status_code == status


def test_wsgi_guard_without_authentication_is_401() -> None:
    start: list[Any] = []
    body = WSGIPolicyGuard(inner_app, ApiAccess())({"PATH_INFO": "/"}, lambda s, h: start.append(s))
    assert start == ["401 Unauthorized"]
    assert json.loads(b"".join(body))["error"]["code"] == "missing_credentials"


def test_wsgi_path_policies_are_checked_right_after_authentication(
    authenticator: Authenticator, keys: ApiKeyService, tenant_id: uuid.UUID
) -> None:
    app = AuthWSGIMiddleware(inner_app, authenticator=authenticator, policies={"/v1/": ApiAccess()})
    client = httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://gw")
    caller = keys.create(tenant_id, "caller", scopes=("api:access",)).secret
    reader = keys.create(tenant_id, "reader", scopes=("read",)).secret
    assert client.get("/v1/models", headers={"authorization": f"Bearer {caller}"}).status_code == 200
    denied = client.get("/v1/models", headers={"authorization": f"Bearer {reader}"})
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "insufficient_permissions"
    assert client.get("/other", headers={"authorization": f"Bearer {reader}"}).status_code == 200
