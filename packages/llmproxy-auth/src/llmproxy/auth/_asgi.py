"""Pure ASGI authentication middleware."""

from __future__ import annotations

from llmproxy.core import (
    ASGIApp,
    EdgeError,
    Receive,
    RequestContext,
    ResponseWatch,
    Scope,
    Send,
    bind_context_to_scope,
    context_from_scope,
    header_values,
    reset_current_context,
    send_error,
)

from ._authenticator import single_authorization
from ._edge import AuthEdge
from ._errors import AuthError
from ._principal import PRINCIPAL_KEY


class AuthMiddleware(AuthEdge[ASGIApp]):
    """Authenticate every HTTP / WebSocket request (JWT or API key) and bind its RequestContext for the
    request (reset when it ends).

    Public paths pass through with the anonymous context. ``policies`` maps path prefixes to a
    :class:`~llmproxy.auth.Policy` checked right after authentication (e.g. ``{"/v1/": ApiAccess()}``: a
    whole API's rule, without a dependency on each route). Refusals are OpenAI-style JSON: 401 with
    ``WWW-Authenticate: Bearer ... error="invalid_token"``, 400 for more than one ``Authorization`` header,
    503 when credentials cannot be checked, and 403 when the app raises
    :class:`~llmproxy.auth.AuthorizationError` (e.g. from :func:`require`) before responding.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        ctx = context_from_scope(scope) or RequestContext.from_scope(scope)
        path = scope.get("path") or "/"
        if not self.is_public(path):
            try:
                authorization = single_authorization(header_values(scope, b"authorization"))
                principal = await self.authenticator.aauthenticate_header(authorization)
                ctx = self.admit(ctx, path, principal)
            except Exception as exc:
                await self._refuse(kind, send, self.refusal(exc))
                return
            scope[PRINCIPAL_KEY] = principal
        token = bind_context_to_scope(scope, ctx)
        try:
            await self._app(kind, scope, receive, send)
        finally:
            reset_current_context(token)

    async def _app(self, kind: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Call the app; an AuthError it raises before responding (e.g. from ``require``) becomes 401/403."""
        if kind == "websocket":
            await self.app(scope, receive, send)
            return
        watch = ResponseWatch(send)
        try:
            await self.app(scope, receive, watch.send)
        except AuthError as exc:
            if watch.started:
                raise
            await send_error(send, exc.for_realm(self.realm))

    async def _refuse(self, kind: str, send: Send, error: EdgeError) -> None:
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})
        else:
            await send_error(send, error)
