"""ASGI middleware (through FastAPI and raw ASGI) and route guards: 200 / 401 / 403 / 503, never a 500."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from llmproxy.auth import (
    ApiAccess,
    AsyncApiKeyService,
    Authenticator,
    AuthMiddleware,
    JWTSettings,
    JWTVerifier,
    PolicyDenied,
    PolicyGuard,
    Principal,
    SameTenant,
    TenantAdmin,
    add_exception_handlers,
    principal_from_scope,
    require,
)
from llmproxy.auth.testing import TEST_AUDIENCE, TEST_ISSUER, TEST_TENANT, KeyPair
from llmproxy.core import ManualClock, RequestContext, Scope, current_context

Mint = Callable[..., str]
OwnTenantAdmin = Annotated[RequestContext, Depends(require(TenantAdmin() & SameTenant()))]


@pytest.fixture
def verifier(rsa_key: KeyPair, manual_clock: ManualClock) -> JWTVerifier:
    settings = JWTSettings(issuer=TEST_ISSUER, audience=TEST_AUDIENCE, keys={rsa_key.kid: rsa_key.public_pem})
    return JWTVerifier(settings, clock=manual_clock)


def gateway_like_app() -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        return {"authenticated": request.scope["llmproxy.context"].is_authenticated}

    @app.get("/health/details", dependencies=[Depends(require(ApiAccess()))])
    async def health_details() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/v1/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        ctx: RequestContext = request.scope["llmproxy.context"]
        assert current_context() is ctx
        tenant = str(ctx.tenant_id)
        return {"tenant": tenant, "user": ctx.user_id, "key": ctx.api_key_id, "endpoint": ctx.endpoint}

    @app.post("/v1/chat/completions", dependencies=[Depends(require(ApiAccess()))])
    async def chat() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/v1/tenants/{tenant_id}/keys")
    async def tenant_keys(ctx: OwnTenantAdmin) -> dict[str, Any]:
        return {"tenant": str(ctx.tenant_id)}

    return app


@pytest.fixture
def client(api_keys: AsyncApiKeyService, verifier: JWTVerifier) -> httpx.AsyncClient:
    app = gateway_like_app()
    app.add_middleware(
        AuthMiddleware,
        authenticator=Authenticator(jwt=verifier, api_keys=api_keys),
        public_paths=("/health",),
        public_prefixes=("/health/",),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body["error"]) == {"message", "type", "code", "param"}
    assert body["error"]["code"] == code
    assert "Traceback" not in response.text
    return body  # type: ignore[no-any-return]


async def test_valid_jwt_sets_the_request_context(
    client: httpx.AsyncClient, mint: Mint, rsa_key: KeyPair
) -> None:
    response = await client.get("/v1/whoami", headers=bearer(mint(rsa_key)))

    assert response.status_code == 200
    assert response.json() == {
        "tenant": TEST_TENANT,
        "user": "user-42",
        "key": None,
        "endpoint": "/v1/whoami",
    }


async def test_valid_api_key_sets_the_request_context(
    client: httpx.AsyncClient, api_keys: AsyncApiKeyService, tenant_id: uuid.UUID
) -> None:
    created = await api_keys.create(tenant_id, "k")

    response = await client.get("/v1/whoami", headers=bearer(created.secret))

    assert response.status_code == 200
    assert response.json()["tenant"] == str(tenant_id)
    assert response.json()["key"] == str(created.key.id)


async def test_the_verified_principal_is_in_the_scope_with_its_claims(
    verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair
) -> None:
    seen: list[Principal | None] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(principal_from_scope(scope))
        await _ok_app(scope, receive, send)

    headers = [(b"authorization", f"Bearer {mint(rsa_key, department='ml')}".encode())]
    await _call(
        AuthMiddleware(app, authenticator=Authenticator(jwt=verifier)), {"type": "http", "headers": headers}
    )

    assert seen[0] is not None
    assert seen[0].claims["department"] == "ml"


async def test_exception_handlers_render_policy_errors_without_the_middleware() -> None:
    app = FastAPI()
    add_exception_handlers(app)

    @app.get("/admin")
    async def admin() -> None:
        raise PolicyDenied("You are not allowed to do this.")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        response = await c.get("/admin")

    assert_openai_error(response, 403, "insufficient_permissions")


async def test_missing_credentials_are_401_with_www_authenticate(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/whoami")

    assert_openai_error(response, 401, "missing_credentials")
    assert response.headers["www-authenticate"].startswith('Bearer realm="llmproxy", error="invalid_token"')


async def test_invalid_jwt_is_401_invalid_token(
    client: httpx.AsyncClient, mint: Mint, rsa_key_2: KeyPair
) -> None:
    response = await client.get("/v1/whoami", headers=bearer(mint(rsa_key_2.with_kid("rsa-1"))))

    assert_openai_error(response, 401, "invalid_token")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_unknown_api_key_is_401_invalid_api_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/whoami", headers=bearer("sk-llmp-" + "Q" * 43))
    assert_openai_error(response, 401, "invalid_api_key")


async def test_revoked_api_key_is_401(
    client: httpx.AsyncClient, api_keys: AsyncApiKeyService, tenant_id: uuid.UUID
) -> None:
    created = await api_keys.create(tenant_id, "k")
    await api_keys.revoke(created.key.id)

    response = await client.get("/v1/whoami", headers=bearer(created.secret))

    assert_openai_error(response, 401, "invalid_api_key")


@pytest.mark.parametrize(
    "header",
    [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer " + "A" * 8192,
        "Bearer \u00ff\u00fe.\u00fd.x",
        "Bearer a.b.c.d.e",
    ],
)
async def test_garbage_credentials_are_401_never_500(client: httpx.AsyncClient, header: str) -> None:
    response = await client.get("/v1/whoami", headers=[(b"authorization", header.encode("latin-1"))])
    assert response.status_code == 401
    assert "error" in response.json()


async def test_public_path_passes_without_credentials(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")

    assert response.status_code == 200
    assert response.json() == {"authenticated": False}


async def test_require_on_a_public_path_is_401_not_500(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/details")
    assert_openai_error(response, 401, "missing_credentials")


async def test_require_dependency_lets_an_allowed_caller_through(
    client: httpx.AsyncClient, api_keys: AsyncApiKeyService, tenant_id: uuid.UUID
) -> None:
    created = await api_keys.create(tenant_id, "k", scopes=("api:access",))

    response = await client.post("/v1/chat/completions", headers=bearer(created.secret))

    assert response.status_code == 200


async def test_require_dependency_denies_with_an_openai_style_403(
    client: httpx.AsyncClient, api_keys: AsyncApiKeyService, tenant_id: uuid.UUID
) -> None:
    created = await api_keys.create(tenant_id, "k", scopes=())

    response = await client.post("/v1/chat/completions", headers=bearer(created.secret))

    body = assert_openai_error(response, 403, "insufficient_permissions")
    assert body["error"]["type"] == "permission_error"
    assert "api:access" in body["error"]["message"]


async def test_same_tenant_route_allows_own_tenant_and_denies_another(
    client: httpx.AsyncClient, mint: Mint, rsa_key: KeyPair
) -> None:
    token = mint(rsa_key)

    own = await client.get(f"/v1/tenants/{TEST_TENANT}/keys", headers=bearer(token))
    other = await client.get(f"/v1/tenants/{uuid.uuid4()}/keys", headers=bearer(token))

    assert own.status_code == 200
    assert own.json() == {"tenant": TEST_TENANT}
    assert_openai_error(other, 403, "insufficient_permissions")


async def test_unreachable_key_store_is_503_not_500(verifier: JWTVerifier, tmp_path: Any) -> None:
    broken = AsyncApiKeyService.from_urls("memory://broken", f"sqlite:///{tmp_path / 'not-migrated.db'}")
    app = AuthMiddleware(gateway_like_app(), authenticator=Authenticator(jwt=verifier, api_keys=broken))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            response = await c.get("/v1/whoami", headers=bearer("sk-llmp-" + "Q" * 43))
    finally:
        await broken.aclose()

    assert_openai_error(response, 503, "auth_unavailable")
    assert response.headers["retry-after"] == "1"


class ExplodingAuthenticator(Authenticator):
    async def aauthenticate(self, token: str) -> Principal:
        raise RuntimeError("bug")


async def test_an_unexpected_error_while_authenticating_is_503_not_500(
    verifier: JWTVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    app = AuthMiddleware(gateway_like_app(), authenticator=ExplodingAuthenticator(jwt=verifier))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        response = await c.get("/v1/whoami", headers=bearer("x.y.z"))

    assert_openai_error(response, 503, "auth_unavailable")
    assert "bug" not in response.text
    assert "unexpected error" in caplog.text


# -- raw ASGI -----------------------------------------------------------------------------------------------


async def _call(app: Any, scope: Scope) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"} if scope["type"] == "websocket" else {"type": "http.request"}

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def _ok_app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await send({"type": "lifespan.startup.complete"})
        return
    body = json.dumps({"tenant": str(scope["llmproxy.context"].tenant_id)}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def test_lifespan_scopes_pass_through_untouched(verifier: JWTVerifier) -> None:
    sent = await _call(
        AuthMiddleware(_ok_app, authenticator=Authenticator(jwt=verifier)), {"type": "lifespan"}
    )
    assert sent == [{"type": "lifespan.startup.complete"}]


async def test_websocket_without_credentials_is_closed_with_policy_violation(verifier: JWTVerifier) -> None:
    scope = {"type": "websocket", "path": "/ws", "headers": []}
    sent = await _call(AuthMiddleware(_ok_app, authenticator=Authenticator(jwt=verifier)), scope)
    assert sent[0]["type"] == "websocket.close"
    assert sent[0]["code"] == 1008


async def test_policy_guard_wraps_a_plain_asgi_app(
    verifier: JWTVerifier, mint: Mint, rsa_key: KeyPair
) -> None:
    app = AuthMiddleware(PolicyGuard(_ok_app, SameTenant()), authenticator=Authenticator(jwt=verifier))
    headers = [(b"authorization", f"Bearer {mint(rsa_key)}".encode())]

    allowed = await _call(
        app, {"type": "http", "path": "/x", "headers": headers, "path_params": {"tenant_id": TEST_TENANT}}
    )
    denied = await _call(app, {"type": "http", "path": "/x", "headers": headers, "path_params": {}})

    assert allowed[0]["status"] == 200
    assert denied[0]["status"] == 403


async def test_path_policies_are_checked_right_after_authentication(
    api_keys: AsyncApiKeyService, verifier: JWTVerifier, tenant_id: uuid.UUID
) -> None:
    reached: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await _ok_app(scope, receive, send)

    auth = AuthMiddleware(
        app,
        authenticator=Authenticator(jwt=verifier, api_keys=api_keys),
        public_paths=("/v1/public",),
        policies={"/v1/admin/": TenantAdmin(), "/v1/": ApiAccess()},  # the first matching prefix wins
    )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=auth), base_url="http://gw")
    caller = (await api_keys.create(tenant_id, "caller", scopes=("api:access",))).secret
    reader = (await api_keys.create(tenant_id, "reader", scopes=("read",))).secret

    assert (await client.get("/v1/models", headers=bearer(caller))).status_code == 200
    body = assert_openai_error(
        await client.get("/v1/models", headers=bearer(reader)), 403, "insufficient_permissions"
    )
    assert "api:access" in body["error"]["message"]
    assert_openai_error(
        await client.get("/v1/admin/x", headers=bearer(caller)), 403, "insufficient_permissions"
    )
    assert (await client.get("/other", headers=bearer(reader))).status_code == 200  # no policy there
    assert (await client.get("/v1/public")).status_code == 200  # public paths are not checked
    assert_openai_error(await client.get("/v1/models"), 401, "missing_credentials")
    assert reached == ["/v1/models", "/other", "/v1/public"]  # refusals never reach the app


def test_path_policies_are_validated(verifier: JWTVerifier) -> None:
    with pytest.raises(ValueError, match="must start with '/'"):
        AuthMiddleware(_ok_app, authenticator=Authenticator(jwt=verifier), policies={"v1/": ApiAccess()})
    with pytest.raises(TypeError, match="not a Policy"):
        AuthMiddleware(_ok_app, authenticator=Authenticator(jwt=verifier), policies={"/v1/": "api:access"})  # type: ignore[dict-item]
