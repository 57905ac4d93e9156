"""Pure ASGI authentication middleware."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from llmproxy.core import (
    ASGIApp,
    Message,
    Receive,
    RequestContext,
    Scope,
    Send,
    bind_context_to_scope,
    context_from_scope,
)

from ._authenticator import Authenticator
from ._errors import AuthError
from ._guards import send_error
from ._policies import Policy
from ._principal import PRINCIPAL_KEY
from ._responses import UNEXPECTED, PathMatcher, PathPolicies

logger = logging.getLogger("llmproxy.auth")


def _authorization(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers") or ():
        if name == b"authorization" or name.lower() == b"authorization":
            return bytes(value)
    return None


class AuthMiddleware:
    """Authenticate every HTTP / WebSocket request (JWT or API key) and bind its RequestContext.

    Public paths pass through with the anonymous context. ``policies`` maps path prefixes to a
    :class:`~llmproxy.auth.Policy` checked right after authentication (e.g. ``{"/v1/": ApiAccess()}``: a
    whole API's rule, without a dependency on each route). Refusals are OpenAI-style JSON: 401 with
    ``WWW-Authenticate: Bearer ... error="invalid_token"``, 503 when credentials cannot be checked, and
    403 when
    the app raises :class:`~llmproxy.auth.AuthorizationError` (e.g. from :func:`require`) before
    responding.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator,
        public_paths: Iterable[str] = (),
        public_prefixes: Iterable[str] = (),
        policies: Mapping[str, Policy] | None = None,
        realm: str = "llmproxy",
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.is_public = PathMatcher(public_paths, public_prefixes)
        self.policies = PathPolicies(policies)
        self.realm = realm

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        ctx = context_from_scope(scope) or RequestContext.from_scope(scope)
        if self.is_public(scope.get("path") or "/"):
            bind_context_to_scope(scope, ctx)
            await self._app(kind, scope, receive, send)
            return
        try:
            principal = await self.authenticator.aauthenticate_header(_authorization(scope))
            ctx = principal.apply_to(ctx)
            self.policies.check(scope.get("path") or "/", ctx)
        except AuthError as exc:
            await self._refuse(kind, send, exc)
            return
        except Exception:
            logger.exception("llmproxy.auth: unexpected error while authenticating")
            await self._refuse(kind, send, UNEXPECTED)
            return
        scope[PRINCIPAL_KEY] = principal
        bind_context_to_scope(scope, ctx)
        await self._app(kind, scope, receive, send)

    async def _app(self, kind: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Call the app; an AuthError it raises before responding (e.g. from ``require``) becomes 401/403."""
        if kind == "websocket":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_watching(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_watching)
        except AuthError as exc:
            if started:
                raise
            await send_error(send, exc, self.realm)

    async def _refuse(self, kind: str, send: Send, exc: AuthError) -> None:
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": exc.message[:120]})
        else:
            await send_error(send, exc, self.realm)
