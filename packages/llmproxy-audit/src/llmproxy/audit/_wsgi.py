"""``WSGIAuditMiddleware``: the WSGI twin; publishes when the server closes the response iterable."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from llmproxy.core import (
    StartResponse,
    WSGIApp,
    WSGIEnviron,
    WSGIResponseWatch,
    bind_environ_usage,
    ensure_environ_context,
    path_prefixes,
    path_under,
    reset_usage,
)

from ._http import DEFAULT_PATHS, LLM_REQUEST_COMPLETED, completed_metadata, outcome_of
from ._publisher import AuditPublisher


class WSGIAuditMiddleware:
    """Publishes one event per request under ``paths`` when the server closes its body (a stream ended)."""

    def __init__(
        self,
        app: WSGIApp,
        *,
        publisher: AuditPublisher,
        paths: Sequence[str] = DEFAULT_PATHS,
        action: str = LLM_REQUEST_COMPLETED,
        entity_type: str = "llm_request",
    ) -> None:
        self.app = app
        self.publisher = publisher
        self.paths = path_prefixes(paths)
        self.action = action
        self.entity_type = entity_type

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        if not path_under(environ.get("PATH_INFO") or "/", self.paths):
            return self.app(environ, start_response)
        started = time.perf_counter()
        usage, token = bind_environ_usage(environ)

        def finish(watch: WSGIResponseWatch) -> None:
            reset_usage(token)
            status = 500 if watch.failed and not watch.started else (watch.status or 500)
            ctx = ensure_environ_context(environ)
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
                    method=environ.get("REQUEST_METHOD"),
                    path=environ.get("PATH_INFO"),
                    ended=watch.ended,
                ),
            )

        return WSGIResponseWatch(start_response, on_close=finish).call(self.app, environ)
