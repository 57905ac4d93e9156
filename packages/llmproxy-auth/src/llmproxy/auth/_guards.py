"""Policies applied at the edges: FastAPI dependency, pure ASGI guard, WSGI guard, worker decorator."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar, cast

from llmproxy.core import (
    ASGIApp,
    Receive,
    RequestContext,
    Scope,
    Send,
    StartResponse,
    WSGIApp,
    WSGIEnviron,
    context_from_environ,
    context_from_scope,
    current_context,
    send_error,
    wsgi_error,
)

from ._errors import DEFAULT_REALM, AuthError, checked_realm
from ._policies import Policy, check

F = TypeVar("F", bound=Callable[..., Any])


def require(policy: Policy) -> Callable[..., Awaitable[RequestContext]]:
    """A FastAPI / Starlette dependency: returns the request's context or raises
    :class:`PolicyDenied` / :class:`MissingCredentials` (rendered as OpenAI-style
    403 / 401 by :class:`AuthMiddleware` or by :func:`add_exception_handlers`).
    SameTenant reads the route's path parameters."""
    from starlette.requests import Request

    # ``async`` although it never awaits: FastAPI runs a plain ``def`` dependency in its thread pool, a
    # thread hop (and GIL hand-off) on every request for a check that takes microseconds.
    async def dependency(request: Request) -> RequestContext:
        return check(policy, context_from_scope(request.scope), request.path_params)

    dependency.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)],
        return_annotation=RequestContext,
    )
    dependency.__name__ = f"require_{type(policy).__name__}"
    return dependency


def add_exception_handlers(app: Any, realm: str = DEFAULT_REALM) -> None:
    """Render :class:`AuthError` raised by handlers/dependencies as OpenAI-style JSON (Starlette/FastAPI)."""
    from starlette.requests import Request
    from starlette.responses import Response

    checked_realm(realm)

    async def handler(request: Request, exc: Exception) -> Response:
        error = cast(AuthError, exc).for_realm(realm)
        return Response(
            error.body(), status_code=error.status, headers=dict(error.headers), media_type="application/json"
        )

    app.add_exception_handler(AuthError, handler)


class PolicyGuard:
    """Pure ASGI: let the request through to ``app`` only when ``policy`` allows the scope's context.
    Path parameters come from ``scope["path_params"]`` (set by Starlette routing)."""

    def __init__(self, app: ASGIApp, policy: Policy, *, realm: str = DEFAULT_REALM) -> None:
        self.app = app
        self.policy = policy
        self.realm = checked_realm(realm)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            check(self.policy, context_from_scope(scope), scope.get("path_params") or {})
        except AuthError as exc:
            await send_error(send, exc.for_realm(self.realm))
            return
        await self.app(scope, receive, send)


def _routing_args(environ: WSGIEnviron) -> Mapping[str, Any]:
    args = environ.get("wsgiorg.routing_args")
    return args[1] if isinstance(args, tuple) and len(args) == 2 and isinstance(args[1], Mapping) else {}


class WSGIPolicyGuard:
    """WSGI: the same check; parameters from ``params(environ)`` (default: ``wsgiorg.routing_args``)."""

    def __init__(
        self,
        app: WSGIApp,
        policy: Policy,
        *,
        params: Callable[[WSGIEnviron], Mapping[str, Any]] = _routing_args,
        realm: str = DEFAULT_REALM,
    ) -> None:
        self.app = app
        self.policy = policy
        self.params = params
        self.realm = checked_realm(realm)

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        try:
            check(self.policy, context_from_environ(environ), self.params(environ))
        except AuthError as exc:
            return wsgi_error(start_response, exc.for_realm(self.realm))
        return self.app(environ, start_response)


def requires(policy: Policy) -> Callable[[F], F]:
    """Decorate a worker function (sync or async): it runs only when the current
    :class:`~llmproxy.core.RequestContext` satisfies ``policy``; SameTenant reads the call's arguments."""

    def decorate(func: F) -> F:
        signature = inspect.signature(func)

        def params(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Mapping[str, Any]:
            try:
                return signature.bind_partial(*args, **kwargs).arguments
            except TypeError:
                return kwargs

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                check(policy, current_context(), params(args, kwargs))
                return await func(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            check(policy, current_context(), params(args, kwargs))
            return func(*args, **kwargs)

        return cast(F, wrapper)

    return decorate
