"""Tenant policies: small, composable predicates over a :class:`~llmproxy.core.RequestContext`."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from llmproxy.core import RequestContext

from ._errors import MissingCredentials, PolicyDenied

_NO_PARAMS: Mapping[str, Any] = MappingProxyType({})


class Policy(ABC):
    """Decides whether an authenticated caller may do something. Combine with ``&`` / ``|``."""

    @abstractmethod
    def allows(self, ctx: RequestContext, params: Mapping[str, Any] = _NO_PARAMS) -> bool: ...

    @abstractmethod
    def describe(self) -> str: ...

    def __and__(self, other: Policy) -> Policy:
        return all_of(self, other)

    def __or__(self, other: Policy) -> Policy:
        return any_of(self, other)


@dataclass(frozen=True)
class HasRole(Policy):
    role: str

    def allows(self, ctx: RequestContext, params: Mapping[str, Any] = _NO_PARAMS) -> bool:
        return self.role in ctx.roles

    def describe(self) -> str:
        return f"role {self.role!r}"


@dataclass(frozen=True)
class HasScope(Policy):
    scope: str

    def allows(self, ctx: RequestContext, params: Mapping[str, Any] = _NO_PARAMS) -> bool:
        return self.scope in ctx.scopes

    def describe(self) -> str:
        return f"scope {self.scope!r}"


@dataclass(frozen=True)
class TenantAdmin(HasRole):
    """The caller has the ``tenant_admin`` role."""

    role: str = "tenant_admin"


@dataclass(frozen=True)
class ApiAccess(HasScope):
    """The caller has the ``api:access`` scope."""

    scope: str = "api:access"


def _canonical_tenant(value: Any) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class SameTenant(Policy):
    """The tenant named by the route (``params[param]``) is the caller's. A missing parameter denies."""

    param: str = "tenant_id"

    def allows(self, ctx: RequestContext, params: Mapping[str, Any] = _NO_PARAMS) -> bool:
        wanted = _canonical_tenant(params.get(self.param))
        return wanted is not None and wanted == ctx.tenant_id

    def describe(self) -> str:
        return f"the caller's own tenant in {self.param!r}"


@dataclass(frozen=True)
class AllOf(Policy):
    policies: tuple[Policy, ...]

    def allows(self, ctx: RequestContext, params: Mapping[str, Any] = _NO_PARAMS) -> bool:
        return all(p.allows(ctx, params) for p in self.policies)

    def describe(self) -> str:
        return "(" + " and ".join(p.describe() for p in self.policies) + ")"


@dataclass(frozen=True)
class AnyOf(Policy):
    policies: tuple[Policy, ...]

    def allows(self, ctx: RequestContext, params: Mapping[str, Any] = _NO_PARAMS) -> bool:
        return any(p.allows(ctx, params) for p in self.policies)

    def describe(self) -> str:
        return "(" + " or ".join(p.describe() for p in self.policies) + ")"


def all_of(*policies: Policy) -> Policy:
    """Every policy allows (flattened: ``all_of(a, all_of(b, c))`` is ``all_of(a, b, c)``)."""
    if not policies:
        raise ValueError("all_of() needs at least one policy")
    flat: list[Policy] = []
    for p in policies:
        flat.extend(p.policies if isinstance(p, AllOf) else (p,))
    return flat[0] if len(flat) == 1 else AllOf(tuple(flat))


def any_of(*policies: Policy) -> Policy:
    """At least one policy allows."""
    if not policies:
        raise ValueError("any_of() needs at least one policy")
    flat: list[Policy] = []
    for p in policies:
        flat.extend(p.policies if isinstance(p, AnyOf) else (p,))
    return flat[0] if len(flat) == 1 else AnyOf(tuple(flat))


def check(
    policy: Policy, ctx: RequestContext | None, params: Mapping[str, Any] | None = None
) -> RequestContext:
    """``ctx`` when the policy allows; :class:`MissingCredentials` when nobody is authenticated (401),
    :class:`PolicyDenied` when the caller is not allowed (403)."""
    if ctx is None or not ctx.is_authenticated:
        raise MissingCredentials("Authentication required.")
    if not policy.allows(ctx, params if params is not None else _NO_PARAMS):
        raise PolicyDenied(
            f"You are not allowed to do this: it requires {policy.describe()}.", policy.describe()
        )
    return ctx
