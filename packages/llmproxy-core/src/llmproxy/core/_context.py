"""The request context every llmproxy middleware reads and (for auth) fills."""

from __future__ import annotations

import contextvars
import dataclasses
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ._types import Scope, WSGIEnviron

#: Key under which the context lives in an ASGI scope and in a WSGI environ.
SCOPE_KEY = "llmproxy.context"
ENVIRON_KEY = "llmproxy.context"

_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "llmproxy_request_context", default=None
)


NO_FLAGS: Mapping[str, bool] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who is calling and what they call. Immutable: derive a new one with :meth:`replace`.

    ``tenant_id`` is the tenant's :class:`uuid.UUID` (None while anonymous). Its string form is accepted and
    parsed once, here; anything else raises ``ValueError`` / ``TypeError`` naming the field.
    """

    tenant_id: uuid.UUID | None = None
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
    #: Flags evaluated for this request by the flags middleware (those the app asked it to expose).
    flags: Mapping[str, bool] = field(default_factory=lambda: NO_FLAGS)  # shared, read-only

    def __post_init__(self) -> None:
        tenant = self.tenant_id
        if tenant is not None and type(tenant) is not uuid.UUID:
            object.__setattr__(self, "tenant_id", parse_tenant_id(tenant))

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


def parse_tenant_id(value: object) -> uuid.UUID:
    """A tenant id as a :class:`uuid.UUID`, from a UUID or its string form; a clear error otherwise."""
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str):
        raise TypeError(f"tenant_id must be a UUID or its string form, got {type(value).__name__}")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ValueError(f"tenant_id is not a UUID: {value[:80]!r}") from None


def _scope_headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or ()}


def current_context() -> RequestContext | None:
    """The context of the request being handled in this task/thread, if any."""
    return _current.get()


def set_current_context(ctx: RequestContext | None) -> contextvars.Token[RequestContext | None]:
    return _current.set(ctx)


def reset_current_context(token: contextvars.Token[RequestContext | None]) -> None:
    """Undo the :func:`set_current_context` / ``bind_context_*`` that returned ``token``."""
    reset_var(_current, token)


def reset_var(var: contextvars.ContextVar[Any], token: contextvars.Token[Any]) -> None:
    """``var.reset(token)``; where the token belongs to another context (a server that ran the request's end
    in a copy), the variable is cleared instead: it must never keep a finished request's value."""
    try:
        var.reset(token)
    except (ValueError, RuntimeError):
        var.set(None)


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


def bind_context_to_scope(scope: Scope, ctx: RequestContext) -> contextvars.Token[RequestContext | None]:
    """Place ``ctx`` in the scope and make it current, so inner middlewares and the handler see it.

    Reset the returned token with :func:`reset_current_context` when the request ends, so that nothing run
    later in this thread or task sees this request's context."""
    scope[SCOPE_KEY] = ctx
    return _current.set(ctx)


def ensure_context(scope: Scope) -> RequestContext:
    """The scope's context, placing an anonymous one from the raw request in the scope when no middleware set
    one (the current context is not changed: :func:`bind_context_to_scope` does that)."""
    ctx = context_from_scope(scope)
    if ctx is None:
        ctx = scope[SCOPE_KEY] = RequestContext.from_scope(scope)
    return ctx


def context_from_environ(environ: WSGIEnviron) -> RequestContext | None:
    ctx = environ.get(ENVIRON_KEY)
    return ctx if isinstance(ctx, RequestContext) else None


def bind_context_to_environ(
    environ: WSGIEnviron, ctx: RequestContext
) -> contextvars.Token[RequestContext | None]:
    """The WSGI twin of :func:`bind_context_to_scope`. A WSGI body is iterated after the app returns: reset
    the token when the server closes it (``llmproxy.core.closing(body, ...)``)."""
    environ[ENVIRON_KEY] = ctx
    return _current.set(ctx)


def ensure_environ_context(environ: WSGIEnviron) -> RequestContext:
    ctx = context_from_environ(environ)
    if ctx is None:
        ctx = environ[ENVIRON_KEY] = RequestContext.from_environ(environ)
    return ctx
