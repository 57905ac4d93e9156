"""Pure ASGI quota middleware: admit before the app runs, settle when the response (or stream) ends."""

from __future__ import annotations

import asyncio
import logging

from llmproxy.core import (
    ASGIApp,
    ClientDisconnected,
    EdgeError,
    Receive,
    ResponseWatch,
    Scope,
    Send,
    bind_usage,
    context_from_scope,
    path_under,
    read_body,
    replay_body,
    reset_usage,
    send_error,
)

from ._client import AsyncQuotaClient
from ._http import (
    MISSING_TENANT,
    Edge,
    check_estimate,
    cost_to_settle,
    rate_limit_headers,
    refusal,
    rejection,
    tokens_to_settle,
)
from ._results import QuotaError, Reservation, TokenEstimate

logger = logging.getLogger("llmproxy.quota")


class QuotaMiddleware(Edge[ASGIApp, AsyncQuotaClient, Scope]):
    """Enforce quotas on every HTTP request whose RequestContext names a tenant.

    - ``estimate_tokens(scope, body) -> int``: the tokens to reserve (the body is buffered up to
      ``max_body_bytes``, larger bodies get 413, and re-fed to the app). None reserves 0 and charges what the
      handler reports.
    - Requests without a tenant pass through untouched (auth decides who must have one), or get 401 with
      ``require_tenant=True``; so do requests outside ``paths`` (path prefixes; default: every path), e.g.
      ``paths=["/v1/"]`` leaves an admin API beside the metered one alone.
    - Rejections: 429 with an OpenAI-style error (``rate_limit_exceeded`` / ``insufficient_quota``),
      ``Retry-After`` and ``x-ratelimit-*`` headers; 503 under the ``closed`` failure policy with Redis down;
      403 for a tenant the limits source does not know.
    - Admitted responses carry ``x-ratelimit-*`` headers; tokens are settled from the usage channel
      (``llmproxy.core.report_usage``) when the app returns: after a stream's last chunk, or on disconnect.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not path_under(scope.get("path", ""), self.paths):
            await self.app(scope, receive, send)
            return
        ctx = context_from_scope(scope)
        if ctx is None or ctx.tenant_id is None:
            if self.require_tenant:
                await send_error(send, MISSING_TENANT)
            else:
                await self.app(scope, receive, send)
            return
        estimate: int | TokenEstimate = 0
        if self.estimate_tokens is not None:
            try:
                body = await read_body(scope, receive, self.max_body_bytes)
            except EdgeError as exc:
                await send_error(send, exc)
                return
            except ClientDisconnected:
                return
            receive = replay_body(body, receive)
            estimate = check_estimate(self.estimate_tokens(scope, body))
        try:
            admission = await self.client.admit(ctx, estimate)
        except QuotaError as exc:
            await send_error(send, refusal(exc))
            return
        now = self.client.core.wall()
        if not admission.allowed:
            await send_error(send, rejection(admission, now))
            return
        watch = ResponseWatch(
            send, headers=[(k.encode(), v.encode()) for k, v in rate_limit_headers(admission, now)]
        )
        usage, token = bind_usage(scope)
        failed = False
        try:
            await self.app(scope, receive, watch.send)
        except BaseException:
            failed = True
            raise
        finally:
            reset_usage(token)
            reservation = admission.reservation
            if reservation is not None:
                tokens = tokens_to_settle(usage.reported, usage.total_tokens, estimate, watch.status, failed)
                cost = cost_to_settle(
                    reservation,
                    usage.reported,
                    usage.input_tokens,
                    usage.output_tokens,
                    watch.status,
                    failed,
                )
                await _settle(self.client, reservation, tokens, cost)


async def _settle(client: AsyncQuotaClient, reservation: Reservation, tokens: int, cost: int | None) -> None:
    """Settle, never raising into the app. The client queues the settle before its first wait and sends it
    even if this task is cancelled (the client went away), so no task of its own is needed here."""
    try:
        await client.settle(reservation, tokens, cost)
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("quota: settling failed")
