"""Who is calling, as established by a verified credential."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from llmproxy.core import RequestContext, parse_tenant_id

PrincipalKind = Literal["jwt", "api_key"]

#: Where the middlewares put the :class:`Principal` (ASGI scope / WSGI environ), next to the RequestContext.
PRINCIPAL_KEY = "llmproxy.auth.principal"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``tenant_id`` is the canonical string form of the tenant's UUID;
    ``tenant_uuid`` the UUID itself, parsed once when the principal is built (the RequestContext carries
    it)."""

    kind: PrincipalKind
    tenant_id: str
    user_id: str | None = None
    api_key_id: str | None = None
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    #: Seconds since the epoch after which the credential is no longer valid (None: no expiry).
    expires_at: float | None = None
    #: The verified JWT claims (empty for API keys). Not part of equality.
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    tenant_uuid: uuid.UUID = field(init=False, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tenant_uuid", parse_tenant_id(self.tenant_id))

    def context_fields(self) -> dict[str, Any]:
        """The :class:`~llmproxy.core.RequestContext` fields this principal sets."""
        return {
            "tenant_id": self.tenant_uuid,
            "user_id": self.user_id,
            "api_key_id": self.api_key_id,
            "roles": self.roles,
            "scopes": self.scopes,
        }

    def apply_to(self, ctx: RequestContext) -> RequestContext:
        """``ctx`` with this principal's identity (the request fields are kept)."""
        return ctx.replace(**self.context_fields())


def context_with_principal(ctx: RequestContext, principal: Principal) -> RequestContext:
    """Same as :meth:`Principal.apply_to`."""
    return principal.apply_to(ctx)


def principal_from_scope(scope: Mapping[str, Any]) -> Principal | None:
    """The principal :class:`AuthMiddleware` (or :class:`AuthWSGIMiddleware`, given the environ) verified."""
    principal = scope.get(PRINCIPAL_KEY)
    return principal if isinstance(principal, Principal) else None
