"""WSGI metering middleware: one event per request, when the server closes the response body."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from llmproxy.core import (
    StartResponse,
    WSGIApp,
    WSGIEnviron,
    WSGIResponseWatch,
    bind_environ_usage,
    context_from_environ,
    path_prefixes,
    path_under,
    reset_usage,
)

from ._track import Recording, event_for, record_quietly


class WSGIMeteringMiddleware:
    """The WSGI twin of :class:`MeteringMiddleware` (the same event, from the same decision code)."""

    def __init__(
        self,
        app: WSGIApp,
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

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        if not path_under(environ.get("PATH_INFO") or "/", self.paths):
            return self.app(environ, start_response)
        started = self.clock()
        usage, token = bind_environ_usage(environ)

        def finished(watch: WSGIResponseWatch) -> None:
            reset_usage(token)
            ctx = context_from_environ(environ)
            if ctx is None:
                return
            status = 500 if watch.failed else watch.status if watch.ended else 499
            record_quietly(
                self.client,
                lambda: event_for(ctx, usage, started_at=started, status=status, provider=self.provider),
            )

        watch = WSGIResponseWatch(start_response, on_close=finished)
        return watch.call(self.app, environ)
