"""``WSGIAuditMiddleware``: the WSGI twin; publishes when the server closes the response iterable."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from llmproxy.core import StartResponse, WSGIApp, WSGIEnviron, ensure_environ_context, open_environ_usage

from ._http import DEFAULT_PATHS, LLM_REQUEST_COMPLETED, completed_metadata, outcome_of, path_matches
from ._publisher import AuditPublisher


class WSGIAuditMiddleware:
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
        self.paths = tuple(paths)
        self.action = action
        self.entity_type = entity_type

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        if not path_matches(environ.get("PATH_INFO") or "/", self.paths):
            return self.app(environ, start_response)
        started = time.perf_counter()
        usage = open_environ_usage(environ)
        state = {"status": 0}

        def watch(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            state["status"] = int(status.split(" ", 1)[0])
            return start_response(status, headers, exc_info)

        def finish() -> None:
            status = state["status"] or 500
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
                ),
            )

        try:
            body = self.app(environ, watch)
        except BaseException:
            state["status"] = state["status"] or 500
            finish()
            raise
        return _Closing(body, finish)


class _Closing:
    """The app's iterable, calling ``on_close`` exactly once when the server closes it."""

    def __init__(self, body: Iterable[bytes], on_close: Any) -> None:
        self._body = body
        self._on_close = on_close
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if not self._closed:
                self._closed = True
                self._on_close()
