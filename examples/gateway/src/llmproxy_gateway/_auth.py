"""Who may do what on the gateway: the platform-admin bootstrap token and the admin policies."""

from __future__ import annotations

import hmac
import uuid
from typing import Any

from llmproxy.auth import (
    ApiAccess,
    AsyncApiKeyService,
    Authenticator,
    HasRole,
    JWTSettings,
    JWTVerifier,
    Principal,
    SameTenant,
    TenantAdmin,
)

PLATFORM_ADMIN_ROLE = "platform_admin"
#: The platform admin belongs to no tenant; its context carries the nil UUID (no tenant has it).
PLATFORM_TENANT_ID = uuid.UUID(int=0)

#: The bootstrap token's holder: every tenant.
PlatformAdmin = HasRole(PLATFORM_ADMIN_ROLE)
#: Admin routes of one tenant (``{tenant_id}`` in the path): the platform admin, or that tenant's admin.
TenantScoped = PlatformAdmin | (TenantAdmin() & SameTenant())
#: Admin routes listing tenants: the platform admin, or a tenant admin (who sees only their own tenant).
AnyAdmin = PlatformAdmin | TenantAdmin()
#: The OpenAI-compatible API: keys (or tokens) with the ``api:access`` scope.
ApiCaller = ApiAccess()


class GatewayAuthenticator(Authenticator):
    """The auth package's :class:`Authenticator`, plus one static platform-admin token (bootstrap).

    The admin token is compared in constant time and yields a principal with role ``platform_admin`` and no
    real tenant. Everything else is an API key or a JWT, verified as usual.
    """

    def __init__(self, *, admin_token: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._admin_token = admin_token.encode() if admin_token else None

    def _platform_admin(self, token: str) -> Principal | None:
        if self._admin_token is not None and hmac.compare_digest(token.encode(), self._admin_token):
            return Principal(
                kind="jwt",
                tenant_id=str(PLATFORM_TENANT_ID),
                user_id="platform-admin",
                roles=frozenset({PLATFORM_ADMIN_ROLE}),
            )
        return None

    def authenticate(self, token: str) -> Principal:
        return self._platform_admin(token) or super().authenticate(token)

    async def aauthenticate(self, token: str) -> Principal:
        return self._platform_admin(token) or await super().aauthenticate(token)


def build_authenticator(
    api_keys: AsyncApiKeyService, admin_token: str | None, jwt: JWTSettings | None = None
) -> GatewayAuthenticator:
    """API keys, the platform admin's token, and tenant-admin JWTs when ``jwt`` is configured (the
    gateway settings' ``jwt``: ``LLMPROXY_JWT_KEYS`` or ``LLMPROXY_JWT_JWKS_URL``, see llmproxy-auth)."""
    verifier = JWTVerifier(jwt) if jwt is not None else None
    return GatewayAuthenticator(admin_token=admin_token, jwt=verifier, api_keys=api_keys)
