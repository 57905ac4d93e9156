"""Pure ASGI and WSGI middleware: require a flag per path prefix (403 ``feature_disabled``), and put the flags
the app asked for into the request's ``RequestContext.flags``. The decision is shared; only the adapters
differ."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from llmproxy.core import (
    ASGIApp,
    Receive,
    RequestContext,
    Scope,
    Send,
    StartResponse,
    WSGIApp,
    WSGIEnviron,
    bind_context_to_environ,
    bind_context_to_scope,
    closing,
    ensure_context,
    ensure_environ_context,
    reset_current_context,
    send_error,
    wsgi_error,
)

from ._errors import FeatureDisabled
from ._evaluator import Evaluator


class FlagGate:
    """The decision both middlewares make: ``FeatureDisabled``, a context carrying the exposed flags, or
    ``None`` (let the request through unchanged).

    ``require`` maps path prefixes to the flag each needs (every matching prefix's flag must be on);
    ``expose`` names the flags evaluated into ``RequestContext.flags`` for the app; ``missing`` is the answer
    for a required flag the flag set does not define (default: off, so a typo fails closed).
    """

    __slots__ = ("_expose", "_flags", "_missing", "_rules")

    def __init__(
        self,
        flags: Evaluator,
        *,
        require: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        expose: Iterable[str] = (),
        missing: bool = False,
    ) -> None:
        rules = tuple(require.items() if isinstance(require, Mapping) else require)
        for prefix, key in rules:
            if not prefix.startswith("/") or not key:
                raise ValueError(
                    f"require: {prefix!r} -> {key!r} must map a path prefix ('/...') to a flag key"
                )
        self._flags = flags
        self._rules = rules
        self._expose = tuple(dict.fromkeys(expose))
        self._missing = missing

    def decide(self, ctx: RequestContext, path: str) -> FeatureDisabled | RequestContext | None:
        flags = self._flags
        for prefix, key in self._rules:
            if path.startswith(prefix) and not flags.is_enabled(key, ctx, self._missing):
                return FeatureDisabled(key)
        if not self._expose:
            return None
        return ctx.replace(flags=MappingProxyType(flags.evaluate(self._expose, ctx)))


class FlagsMiddleware:
    """Pure ASGI: see :class:`FlagGate`. Place it after (inside) authentication, so the tenant is known."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        flags: Evaluator,
        require: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        expose: Iterable[str] = (),
        missing: bool = False,
    ) -> None:
        self.app = app
        self.gate = FlagGate(flags, require=require, expose=expose, missing=missing)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        decision = self.gate.decide(ensure_context(scope), scope.get("path") or "")
        if decision is None:
            await self.app(scope, receive, send)
        elif isinstance(decision, FeatureDisabled):
            await send_error(send, decision)
        else:
            token = bind_context_to_scope(scope, decision)
            try:
                await self.app(scope, receive, send)
            finally:
                reset_current_context(token)


class FlagsWSGIMiddleware:
    """The WSGI twin of :class:`FlagsMiddleware` (same :class:`FlagGate`)."""

    def __init__(
        self,
        app: WSGIApp,
        *,
        flags: Evaluator,
        require: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        expose: Iterable[str] = (),
        missing: bool = False,
    ) -> None:
        self.app = app
        self.gate = FlagGate(flags, require=require, expose=expose, missing=missing)

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        decision = self.gate.decide(ensure_environ_context(environ), environ.get("PATH_INFO") or "/")
        if decision is None:
            return self.app(environ, start_response)
        if isinstance(decision, FeatureDisabled):
            return wsgi_error(start_response, decision)
        token = bind_context_to_environ(environ, decision)
        try:
            body = self.app(environ, start_response)
        except BaseException:
            reset_current_context(token)
            raise
        # The body is iterated after we return: the context stays until the server closes it.
        return closing(body, lambda: reset_current_context(token))
