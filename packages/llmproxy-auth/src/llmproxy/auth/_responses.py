"""What the adapters answer when they refuse a request (shared by ASGI and WSGI): status, headers, body."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from llmproxy.core import RequestContext, openai_error_body

from ._errors import AuthError, AuthUnavailable
from ._policies import Policy, check

_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\]')
_REASONS = {401: "Unauthorized", 403: "Forbidden", 503: "Service Unavailable"}
UNEXPECTED = AuthUnavailable("Authentication failed unexpectedly; retry later.")


def error_response(exc: AuthError, realm: str = "llmproxy") -> tuple[int, list[tuple[str, str]], bytes]:
    body = openai_error_body(exc.message, exc.type, exc.code)
    headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
    if exc.status == 401:
        description = _UNSAFE.sub("", exc.message)
        headers.append(
            (
                "www-authenticate",
                f'Bearer realm="{realm}", error="invalid_token", error_description="{description}"',
            )
        )
    elif exc.status == 503:
        headers.append(("retry-after", "1"))
    return exc.status, headers, body


def status_line(status: int) -> str:
    return f"{status} {_REASONS.get(status, 'Error')}"


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
