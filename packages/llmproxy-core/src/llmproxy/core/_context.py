"""The request context every llmproxy middleware reads and (for auth) fills."""

from __future__ import annotations

import contextvars
import dataclasses
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ._types import Scope, WSGIEnviron

#: Key under which the context lives in an ASGI scope and in a WSGI environ.
SCOPE_KEY = "llmproxy.context"
ENVIRON_KEY = "llmproxy.context"

_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "llmproxy_request_context", default=None
)


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who is calling and what they call. Immutable: derive a new one with :meth:`replace`.

    ``tenant_id`` is the canonical string form of the tenant's UUID.
    """

    tenant_id: str | None = None
    api_key_id: str | None = None
    user_id: str | None = None
    roles: frozenset[str] = field(default_factory=frozenset)
    scopes: frozenset[str] = field(default_factory=frozenset)
    endpoint: str | None = None
    method: str | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    client_ip: str | None = None
    user_agent: str | None = None
    model: str | None = None

    def replace(self, **changes: Any) -> RequestContext:
        return dataclasses.replace(self, **changes)

    @property
    def is_authenticated(self) -> bool:
        return self.tenant_id is not None

    @classmethod
    def from_scope(cls, scope: Scope) -> RequestContext:
        """A context holding what the raw HTTP request says (no identity yet)."""
        headers = _scope_headers(scope)
        client = scope.get("client")
        return cls(
            endpoint=scope.get("path"),
            method=scope.get("method"),
            request_id=headers.get("x-request-id") or uuid.uuid4().hex,
            client_ip=client[0] if client else None,
            user_agent=headers.get("user-agent"),
        )

    @classmethod
    def from_environ(cls, environ: WSGIEnviron) -> RequestContext:
        return cls(
            endpoint=environ.get("PATH_INFO") or "/",
            method=environ.get("REQUEST_METHOD"),
            request_id=environ.get("HTTP_X_REQUEST_ID") or uuid.uuid4().hex,
            client_ip=environ.get("REMOTE_ADDR"),
            user_agent=environ.get("HTTP_USER_AGENT"),
        )


def _scope_headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or ()}


def current_context() -> RequestContext | None:
    """The context of the request being handled in this task/thread, if any."""
    return _current.get()


def set_current_context(ctx: RequestContext | None) -> contextvars.Token[RequestContext | None]:
    return _current.set(ctx)


def reset_current_context(token: contextvars.Token[RequestContext | None]) -> None:
    _current.reset(token)


@contextmanager
def use_context(ctx: RequestContext) -> Iterator[RequestContext]:
    """Make ``ctx`` the current context for the body of the ``with`` (worker loops, tests)."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def context_from_scope(scope: Scope) -> RequestContext | None:
    ctx = scope.get(SCOPE_KEY)
    return ctx if isinstance(ctx, RequestContext) else None


def bind_context_to_scope(scope: Scope, ctx: RequestContext) -> None:
    """Place ``ctx`` in the scope and make it current, so inner middlewares and the handler see it."""
    scope[SCOPE_KEY] = ctx
    _current.set(ctx)


def ensure_context(scope: Scope) -> RequestContext:
    """The scope's context, creating an anonymous one from the raw request when no middleware set one."""
    ctx = context_from_scope(scope)
    if ctx is None:
        ctx = RequestContext.from_scope(scope)
        bind_context_to_scope(scope, ctx)
    return ctx


def context_from_environ(environ: WSGIEnviron) -> RequestContext | None:
    ctx = environ.get(ENVIRON_KEY)
    return ctx if isinstance(ctx, RequestContext) else None


def bind_context_to_environ(environ: WSGIEnviron, ctx: RequestContext) -> None:
    environ[ENVIRON_KEY] = ctx
    _current.set(ctx)


def ensure_environ_context(environ: WSGIEnviron) -> RequestContext:
    ctx = context_from_environ(environ)
    if ctx is None:
        ctx = RequestContext.from_environ(environ)
        bind_context_to_environ(environ, ctx)
    return ctx
