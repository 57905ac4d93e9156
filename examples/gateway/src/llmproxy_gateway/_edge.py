"""Edge middlewares of the app itself (pure ASGI): access log + request id, error guard, body limits.

They are built from llmproxy-core's edge helpers: :class:`~llmproxy.core.EdgeError` answers sent with
:func:`~llmproxy.core.send_error`, the bounded body reader, and :class:`~llmproxy.core.ResponseWatch`.
"""

from __future__ import annotations

import logging
import time

from llmproxy.core import (
    ASGIApp,
    ClientDisconnected,
    EdgeError,
    Receive,
    ResponseWatch,
    Scope,
    Send,
    bind_context_to_scope,
    context_from_scope,
    ensure_context,
    read_body,
    replay_body,
    reset_current_context,
    reset_usage,
    send_error,
    use_usage,
)

from ._failures import answer_for, database_unavailable
from ._json_depth import check_json_depth

logger = logging.getLogger("llmproxy_gateway.access")


class RequestBodyLimit:
    """Reads the whole request body up front and replays it to the app, refusing what no layer should hold.

    A body over ``max_bytes`` — announced by ``content-length`` or discovered while reading a chunked body —
    gets 413, a malformed ``content-length`` 400, and a body nesting arrays and objects deeper than
    ``max_json_depth`` 400 (``json_too_deep``), before any inner middleware or handler runs: nothing
    downstream holds an oversized body or walks one deep enough to exhaust Python's recursion limit.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, max_json_depth: int = 128) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if max_json_depth < 1:
            raise ValueError("max_json_depth must be >= 1")
        self.app = app
        self.max_bytes = max_bytes
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(scope, receive, self.max_bytes)
            check_json_depth(body, self.max_json_depth)
        except EdgeError as exc:
            await send_error(send, exc)
            return
        except ClientDisconnected:
            return
        await self.app(scope, replay_body(body, receive), send)


class ErrorGuard:
    """The last line: an exception escaping any layer below becomes an OpenAI error, never a traceback.

    An unreachable database is 503 ``database_unavailable`` with ``Retry-After``; anything else is 500
    ``internal_error`` with ``connection: close``, so a client's pool drops the connection instead of
    finding it closed under its next request. An exception raised after a complete answer (Starlette
    re-raises what its error handler already answered) is not passed on to the server either: the server
    would drop the kept-alive connection without telling the client.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watch = ResponseWatch(send)
        try:
            await self.app(scope, receive, watch.send)
        except Exception as exc:
            if watch.ended:  # answered (and logged) by the app's own handler
                return
            where = (scope.get("method"), scope.get("path"))
            if database_unavailable(exc):
                logger.error("database unavailable on %s %s: %s", *where, exc)
            else:
                logger.error("unhandled error on %s %s", *where, exc_info=exc)
            if watch.started:  # a response cut half-way: only closing the connection can tell the client
                raise
            await send_error(send, answer_for(exc))


class AccessLog:
    """Gives every request its context (request id) first, echoes ``x-request-id``, logs one line at the end.

    The context is made current for the whole request and the usage channel starts empty; both context
    variables are reset when the request ends, undoing whatever the layers below bound in this task, so
    nothing run after it (in this task or thread) sees this request's context or usage.
    """

    def __init__(self, app: ASGIApp, *, log: bool = True) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.perf_counter()
        ctx = ensure_context(scope)
        context_token = bind_context_to_scope(scope, ctx)
        usage_token = use_usage(None)
        watch = ResponseWatch(send, headers=[(b"x-request-id", ctx.request_id.encode("latin-1"))])
        try:
            await self.app(scope, receive, watch.send)
        finally:
            reset_usage(usage_token)
            reset_current_context(context_token)
            if self.log:
                final = context_from_scope(scope) or ctx
                logger.info(
                    "request",
                    extra={
                        "request_id": ctx.request_id,
                        "method": scope.get("method"),
                        "path": scope.get("path"),
                        "status": watch.status or 500,
                        "duration_ms": round((time.perf_counter() - started_at) * 1000, 3),
                        "tenant_id": str(final.tenant_id) if final.tenant_id else None,
                        "api_key_id": final.api_key_id,
                    },
                )
