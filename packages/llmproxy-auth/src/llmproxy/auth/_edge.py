"""What the ASGI and WSGI middlewares decide alike: public paths, path policies, the principal's context,
what a failure answers. Each middleware adds only its adapter."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Generic, TypeVar

from llmproxy.core import EdgeError, RequestContext

from ._authenticator import Authenticator
from ._errors import DEFAULT_REALM, AuthError, AuthUnavailable, checked_realm
from ._policies import Policy, check
from ._principal import Principal

logger = logging.getLogger("llmproxy.auth")

UNEXPECTED = AuthUnavailable("Authentication failed unexpectedly; retry later.")
App = TypeVar("App")


class PathMatcher:
    """Public paths: exact matches and prefixes, decided once per request with no allocation."""

    __slots__ = ("_exact", "_prefixes")

    def __init__(self, paths: Iterable[str], prefixes: Iterable[str]) -> None:
        self._exact = frozenset(paths)
        self._prefixes = tuple(prefixes)
        for p in (*self._exact, *self._prefixes):
            if not p.startswith("/"):
                raise ValueError(f"public paths must start with '/': {p!r}")

    def __call__(self, path: str) -> bool:
        return path in self._exact or (bool(self._prefixes) and path.startswith(self._prefixes))


class PathPolicies:
    """Policies by path prefix (the first matching prefix wins), checked by the middleware right after
    authentication: a whole API's rule without a dependency on each route."""

    __slots__ = ("_prefixes", "_rules")

    def __init__(self, policies: Mapping[str, Policy] | None) -> None:
        self._rules = tuple((policies or {}).items())
        for prefix, policy in self._rules:
            if not prefix.startswith("/"):
                raise ValueError(f"policy path prefixes must start with '/': {prefix!r}")
            if not isinstance(policy, Policy):
                raise TypeError(f"the policy for {prefix!r} is not a Policy: {policy!r}")
        self._prefixes = tuple(prefix for prefix, _ in self._rules)

    def check(self, path: str, ctx: RequestContext) -> None:
        """Raise :class:`PolicyDenied` (403) when the policy of ``path``'s prefix does not allow ``ctx``."""
        if self._prefixes and path.startswith(self._prefixes):
            for prefix, policy in self._rules:
                if path.startswith(prefix):
                    check(policy, ctx)
                    return


class AuthEdge(Generic[App]):
    """The configuration and decisions both middlewares share (validated and precomputed once)."""

    def __init__(
        self,
        app: App,
        *,
        authenticator: Authenticator,
        public_paths: Iterable[str] = (),
        public_prefixes: Iterable[str] = (),
        policies: Mapping[str, Policy] | None = None,
        realm: str = DEFAULT_REALM,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.is_public = PathMatcher(public_paths, public_prefixes)
        self.policies = PathPolicies(policies)
        self.realm = checked_realm(realm)

    def admit(self, ctx: RequestContext, path: str, principal: Principal) -> RequestContext:
        """``ctx`` with the principal's identity, once the path's policy allows it (else PolicyDenied)."""
        ctx = principal.apply_to(ctx)
        self.policies.check(path, ctx)
        return ctx

    def refusal(self, exc: Exception) -> EdgeError:
        """The answer to a failed authentication (call it in the ``except`` block: a bug is logged, with
        its traceback, and answered 503 without one)."""
        if not isinstance(exc, AuthError):
            logger.exception("llmproxy.auth: unexpected error while authenticating")
            exc = UNEXPECTED
        return exc.for_realm(self.realm)
