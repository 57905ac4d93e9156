"""Pure ASGI metering middleware: one event per request, when the response (or stream) ends."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from llmproxy.core import (
    ASGIApp,
    Receive,
    ResponseWatch,
    Scope,
    Send,
    bind_usage,
    context_from_scope,
    path_prefixes,
    path_under,
    reset_usage,
)

from ._track import Recording, event_for, record_quietly


class MeteringMiddleware:
    """Record one :class:`UsageEvent` per HTTP request whose RequestContext names a tenant.

    Recorded when the app returns: after a stream's last chunk, or when the client disconnected (with what
    was streamed until then, status ``499``). Tokens come from core's usage channel (``report_usage``),
    opened here if no outer middleware did. Recording is queued in the write-behind: no round trip of its
    own, and a failure never reaches the request.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        client: Recording,
        provider: str | None = None,
        clock: Callable[[], float] = time.time,
        paths: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.client = client
        self.paths = path_prefixes(paths)  # path prefixes to meter (default: every path)
        self.provider = provider
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not path_under(scope.get("path", ""), self.paths):
            await self.app(scope, receive, send)
            return
        started = self.clock()
        usage, token = bind_usage(scope)
        watch = ResponseWatch(send)
        try:
            await self.app(scope, receive, watch.send)
        finally:
            reset_usage(token)
            ctx = context_from_scope(scope)  # read at the end: auth may sit inside this middleware
            if ctx is not None:
                status = watch.status if watch.ended else 499 if watch.started else 500
                record_quietly(
                    self.client,
                    lambda: event_for(ctx, usage, started_at=started, status=status, provider=self.provider),
                )
