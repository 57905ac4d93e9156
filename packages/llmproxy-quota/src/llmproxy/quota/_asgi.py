"""Pure ASGI quota middleware: admit before the app runs, settle when the response (or stream) ends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from llmproxy.core import ASGIApp, Message, Receive, Scope, Send, context_from_scope, open_usage

from ._client import AsyncQuotaClient
from ._http import Headers, check_estimate, error, rate_limit_headers, rejection, tokens_to_settle
from ._results import InvalidQuotaRequest, Reservation, UnknownTenant

logger = logging.getLogger("llmproxy.quota")

EstimateTokens = Callable[[Scope, bytes], int]


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


class QuotaMiddleware:
    """Enforce quotas on every HTTP request whose RequestContext names a tenant.

    - ``estimate_tokens(scope, body) -> int``: the tokens to reserve (the body is buffered up to
      ``max_body_bytes``, larger bodies get 413, and re-fed to the app). None reserves 0 and charges what the
      handler reports.
    - Requests without a tenant pass through untouched (auth decides who must have one), or get 401 with
      ``require_tenant=True``.
    - Rejections: 429 with an OpenAI-style error (``rate_limit_exceeded`` / ``insufficient_quota``),
      ``Retry-After`` and ``x-ratelimit-*`` headers; 503 under the ``closed`` failure policy with Redis down;
      403 for a tenant the limits source does not know.
    - Admitted responses carry ``x-ratelimit-*`` headers; tokens are settled from the usage channel
      (``llmproxy.core.report_usage``) when the app returns: after a stream's last chunk, or on disconnect.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        client: AsyncQuotaClient,
        estimate_tokens: EstimateTokens | None = None,
        max_body_bytes: int = 8 * 1024 * 1024,
        require_tenant: bool = False,
    ) -> None:
        if max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        self.app = app
        self.client = client
        self.estimate_tokens = estimate_tokens
        self.max_body_bytes = max_body_bytes
        self.require_tenant = require_tenant

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = context_from_scope(scope)
        if ctx is None or ctx.tenant_id is None:
            if self.require_tenant:
                await _respond(
                    send,
                    *error(401, "No tenant: authenticate first.", "invalid_request_error", "missing_tenant"),
                )
            else:
                await self.app(scope, receive, send)
            return
        estimate = 0
        if self.estimate_tokens is not None:
            try:
                body = await _read_body(receive, self.max_body_bytes)
            except _TooLarge:
                await _respond(
                    send,
                    *error(
                        413,
                        f"Request body exceeds {self.max_body_bytes} bytes.",
                        "invalid_request_error",
                        "request_too_large",
                    ),
                )
                return
            except _Disconnected:
                return
            receive = _replay(body, receive)
            estimate = check_estimate(self.estimate_tokens(scope, body))
        usage = open_usage(scope)
        try:
            admission = await self.client.admit(ctx, estimate)
        except UnknownTenant as exc:
            await _respond(send, *error(403, str(exc), "invalid_request_error", "unknown_tenant"))
            return
        except InvalidQuotaRequest as exc:
            await _respond(
                send, *error(400, str(exc), "invalid_request_error", "invalid_quota_request", exc.field)
            )
            return
        now = self.client.core.wall()
        if not admission.allowed:
            await _respond(send, *rejection(admission, now))
            return
        extra = [(k.encode(), v.encode()) for k, v in rate_limit_headers(admission, now)]
        status: list[int] = []

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        failed = False
        try:
            await self.app(scope, receive, send_with_headers)
        except BaseException:
            failed = True
            raise
        finally:
            if admission.reservation is not None:
                tokens = tokens_to_settle(
                    usage.reported, usage.total_tokens, estimate, status[0] if status else None, failed
                )
                await _settle(self.client, admission.reservation, tokens)


async def _settle(client: AsyncQuotaClient, reservation: Reservation, tokens: int) -> None:
    """Settle, never raising into the app. The client queues the settle before its first wait and sends it
    even if this task is cancelled (the client went away), so no task of its own is needed here."""
    try:
        await client.settle(reservation, tokens)
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("quota: settling failed")


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed


async def _respond(send: Send, status: int, headers: Headers, body: bytes) -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers] + [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})
