"""WSGI authentication middleware (same decisions as the ASGI one, through the sync services)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from llmproxy.core import (
    RequestContext,
    StartResponse,
    WSGIApp,
    WSGIEnviron,
    WSGIResponseWatch,
    bind_context_to_environ,
    closing,
    context_from_environ,
    reset_current_context,
    wsgi_error,
)

from ._edge import AuthEdge
from ._errors import AuthError
from ._principal import PRINCIPAL_KEY


class AuthWSGIMiddleware(AuthEdge[WSGIApp]):
    """Authenticate every request and bind its RequestContext to the environ and, until the server closes
    the response body, the current context.

    Needs a sync API key service (:class:`~llmproxy.auth.ApiKeyService`) in the authenticator. A WSGI
    server hands over one ``HTTP_AUTHORIZATION``: several headers it folded into one (``"Bearer a,Bearer
    b"``) are refused with 400 as the ASGI middleware refuses them; a server that keeps only one of them
    leaves nothing to detect.
    """

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        ctx = context_from_environ(environ) or RequestContext.from_environ(environ)
        path = environ.get("PATH_INFO") or "/"
        if not self.is_public(path):
            try:
                principal = self.authenticator.authenticate_header(environ.get("HTTP_AUTHORIZATION"))
                ctx = self.admit(ctx, path, principal)
            except Exception as exc:
                return wsgi_error(start_response, self.refusal(exc))
            environ[PRINCIPAL_KEY] = principal
        token = bind_context_to_environ(environ, ctx)
        watch = WSGIResponseWatch(start_response)
        try:
            body = self.app(environ, watch.start_response)
        except BaseException as exc:
            reset_current_context(token)
            # An AuthError the app raises before starting its response (e.g. a policy check) is a 401/403.
            if isinstance(exc, AuthError) and not watch.started:
                return wsgi_error(start_response, exc.for_realm(self.realm))
            raise
        return closing(body, partial(reset_current_context, token))
