"""Edge middlewares of the app itself (pure ASGI): access log + request id, error guard, body-size limit."""

from __future__ import annotations

import logging
import time

from llmproxy.core import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    context_from_scope,
    ensure_context,
    openai_error_body,
)

logger = logging.getLogger("llmproxy_gateway.access")


async def _send_error(send: Send, status: int, message: str, type: str, code: str) -> None:
    body = openai_error_body(message, type, code)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestBodyLimit:
    """Reads the whole request body up front (at most ``max_bytes``) and replays it to the app.

    A larger body — announced by ``content-length`` or discovered while reading a chunked body — gets 413
    before any inner middleware or handler runs, so nothing downstream ever holds an oversized body.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers") or ():
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._too_large(send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await _send_error(
            send,
            413,
            f"request body is larger than {self.max_bytes} bytes",
            "invalid_request_error",
            "request_too_large",
        )


class ErrorGuard:
    """The last line: an exception escaping any middleware becomes a 500 OpenAI error, never a traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception:
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await _send_error(send, 500, "internal server error", "server_error", "internal_error")


class AccessLog:
    """Gives every request a context (request id) first, echoes ``x-request-id``, logs one line at the end."""

    def __init__(self, app: ASGIApp, *, log: bool = True) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.perf_counter()
        request_id = ensure_context(scope).request_id
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.log:
                ctx = context_from_scope(scope)
                logger.info(
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": scope.get("method"),
                        "path": scope.get("path"),
                        "status": status or 500,
                        "duration_ms": round((time.perf_counter() - started_at) * 1000, 3),
                        "tenant_id": str(ctx.tenant_id) if ctx and ctx.tenant_id else None,
                        "api_key_id": ctx.api_key_id if ctx else None,
                    },
                )
