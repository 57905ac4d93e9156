"""WSGI authentication middleware (same decisions as the ASGI one, through the sync services)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from llmproxy.core import (
    RequestContext,
    StartResponse,
    WSGIApp,
    WSGIEnviron,
    bind_context_to_environ,
    context_from_environ,
)

from ._authenticator import Authenticator
from ._errors import AuthError
from ._policies import Policy
from ._principal import PRINCIPAL_KEY
from ._responses import UNEXPECTED, PathMatcher, PathPolicies, error_response, status_line

logger = logging.getLogger("llmproxy.auth")


class AuthWSGIMiddleware:
    """Authenticate every request and bind its RequestContext to the environ (and the current context).

    Needs a sync API key service (:class:`~llmproxy.auth.ApiKeyService`) in the authenticator.
    """

    def __init__(
        self,
        app: WSGIApp,
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

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        ctx = context_from_environ(environ) or RequestContext.from_environ(environ)
        if self.is_public(environ.get("PATH_INFO") or "/"):
            bind_context_to_environ(environ, ctx)
            return self._app(environ, start_response)
        try:
            principal = self.authenticator.authenticate_header(environ.get("HTTP_AUTHORIZATION"))
            ctx = principal.apply_to(ctx)
            self.policies.check(environ.get("PATH_INFO") or "/", ctx)
        except AuthError as exc:
            return self._refuse(start_response, exc)
        except Exception:
            logger.exception("llmproxy.auth: unexpected error while authenticating")
            return self._refuse(start_response, UNEXPECTED)
        environ[PRINCIPAL_KEY] = principal
        bind_context_to_environ(environ, ctx)
        return self._app(environ, start_response)

    def _app(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        """Call the app; an AuthError it raises before starting its response becomes 401/403."""
        started = False

        def start_watching(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal started
            started = True
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        try:
            return self.app(environ, start_watching)
        except AuthError as exc:
            if started:
                raise
            return self._refuse(start_response, exc)

    def _refuse(self, start_response: StartResponse, exc: AuthError) -> list[bytes]:
        status, headers, body = error_response(exc, self.realm)
        start_response(status_line(status), headers)
        return [body]
