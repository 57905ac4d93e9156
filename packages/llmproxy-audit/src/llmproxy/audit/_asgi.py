"""``AuditMiddleware`` (pure ASGI): publishes ``llm_request_completed`` when a response ends, streams too."""

from __future__ import annotations

import time
from collections.abc import Sequence

from llmproxy.core import (
    ASGIApp,
    Receive,
    ResponseWatch,
    Scope,
    Send,
    bind_usage,
    ensure_context,
    path_prefixes,
    path_under,
    reset_usage,
)

from ._http import DEFAULT_PATHS, LLM_REQUEST_COMPLETED, completed_metadata, outcome_of
from ._publisher import AsyncAuditPublisher, AuditPublisher


class AuditMiddleware:
    """Publishes one event per HTTP request under ``paths`` once its response has ended (last body chunk sent,
    the app returned, or the client went away). The publish only enqueues: it adds no I/O to the request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        publisher: AsyncAuditPublisher | AuditPublisher,
        paths: Sequence[str] = DEFAULT_PATHS,
        action: str = LLM_REQUEST_COMPLETED,
        entity_type: str = "llm_request",
    ) -> None:
        self.app = app
        self.publisher = publisher
        self.paths = path_prefixes(paths)
        self.action = action
        self.entity_type = entity_type

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not path_under(scope.get("path", ""), self.paths):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        usage, token = bind_usage(scope)
        watch = ResponseWatch(send)
        failed = False
        try:
            await self.app(scope, receive, watch.send)
        except BaseException:
            failed = True
            raise
        finally:
            reset_usage(token)
            status = 500 if failed and not watch.started else (watch.status or 500)
            ctx = ensure_context(scope)
            self.publisher.publish(
                self.action,
                self.entity_type,
                ctx.request_id,
                context=ctx,
                outcome=outcome_of(status),
                metadata=completed_metadata(
                    usage,
                    status=status,
                    duration_s=time.perf_counter() - started,
                    method=scope.get("method"),
                    path=scope.get("path"),
                    ended=watch.ended,
                ),
            )
