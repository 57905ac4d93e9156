"""Watching a response go out: its status, its start, its end (streams included), through ``send`` (ASGI) or
``start_response`` and the body iterable (WSGI).

Quota settles, metering records, audit publishes and observability measures when a response *ends*: after the
last chunk of a stream, or when the client goes away. Each middleware wraps ``send`` with a
:class:`ResponseWatch` and reads it when the app returns:

    watch = ResponseWatch(send, headers=[(b"x-ratelimit-limit-requests", b"60")])
    try:
        await self.app(scope, receive, watch.send)
    finally:
        record(watch.status, complete=watch.ended)   # ended False: the client disconnected mid-stream

The WSGI twin, :class:`WSGIResponseWatch`, calls ``on_close`` once, when the server closes the body iterable
(PEP 3333), which is when a WSGI response has ended or been abandoned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from ._types import Message, Send, StartResponse, WSGIApp, WSGIEnviron

RawHeaders = Sequence[tuple[bytes, bytes]]


class ResponseWatch:
    """Wraps an ASGI ``send``: adds ``headers`` to the response start and records what went out.

    ``status`` is None until the response starts; ``ended`` becomes True with the last body message
    (``more_body`` false). ``on_body(watch, size)`` is called for each non-empty body message before it is
    sent (to time stream chunks, or count them). ``headers`` may be extended until the response starts.
    """

    __slots__ = ("_send", "ended", "headers", "on_body", "response_headers", "status")

    def __init__(
        self,
        send: Send,
        *,
        headers: RawHeaders = (),
        on_body: Callable[[ResponseWatch, int], None] | None = None,
    ) -> None:
        self._send = send
        self.headers: list[tuple[bytes, bytes]] = list(headers)
        self.on_body = on_body
        self.status: int | None = None
        #: The headers the app started its response with (before ``headers`` were added).
        self.response_headers: Sequence[tuple[bytes, bytes]] = ()
        self.ended = False

    @property
    def started(self) -> bool:
        return self.status is not None

    async def send(self, message: Message) -> None:
        # Called for every chunk of every stream, by each middleware: the body case comes first and does
        # no more than it must.
        kind = message["type"]
        if kind == "http.response.body":
            if self.on_body is not None:
                body = message.get("body")
                if body:
                    self.on_body(self, len(body))
            if message.get("more_body"):
                await self._send(message)
            else:
                await self._send(message)
                self.ended = True  # only once the last message went out: not if the client had gone
            return
        if kind == "http.response.start":
            self.status = message["status"]
            self.response_headers = message.get("headers") or ()
            if self.headers:
                message = {**message, "headers": [*message.get("headers", ()), *self.headers]}
        await self._send(message)


class WSGIResponseWatch:
    """The WSGI twin of :class:`ResponseWatch`.

    ``watch.call(app, environ)`` runs the app with :meth:`start_response` (which adds ``headers``) and returns
    its body wrapped so that ``on_close(watch)`` runs exactly once: when the server closes the iterable, or at
    once if the app raises before returning (``failed`` is then True, as when the iteration raises).
    """

    __slots__ = (
        "_closed",
        "_start_response",
        "ended",
        "failed",
        "headers",
        "on_body",
        "on_close",
        "response_headers",
        "status",
    )

    def __init__(
        self,
        start_response: StartResponse,
        *,
        headers: Sequence[tuple[str, str]] = (),
        on_close: Callable[[WSGIResponseWatch], None] | None = None,
        on_body: Callable[[WSGIResponseWatch, int], None] | None = None,
    ) -> None:
        self._start_response = start_response
        self.headers: list[tuple[str, str]] = list(headers)
        self.on_close = on_close
        self.on_body = on_body
        self.status: int | None = None
        #: The headers the app started its response with (before ``headers`` were added).
        self.response_headers: Sequence[tuple[str, str]] = ()
        self.ended = False
        self.failed = False
        self._closed = False

    @property
    def started(self) -> bool:
        return self.status is not None

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        try:
            self.status = int(status[:3])
        except ValueError:
            self.status = 500
        self.response_headers = headers
        if self.headers:
            headers = [*headers, *self.headers]
        if exc_info is not None:
            return self._start_response(status, headers, exc_info)
        return self._start_response(status, headers)

    def call(self, app: WSGIApp, environ: WSGIEnviron) -> Iterable[bytes]:
        try:
            body = app(environ, self.start_response)
        except BaseException:
            self.failed = True
            self.close()
            raise
        return _Watched(body, self)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.on_close is not None:
                self.on_close(self)


class _Watched:
    """The app's body iterable, watched; closing it closes the app's, then the watch."""

    __slots__ = ("_inner", "_watch")

    def __init__(self, inner: Iterable[bytes], watch: WSGIResponseWatch) -> None:
        self._inner = inner
        self._watch = watch

    def __iter__(self) -> Iterator[bytes]:
        watch = self._watch
        on_body = watch.on_body
        try:
            for chunk in self._inner:
                if chunk and on_body is not None:
                    on_body(watch, len(chunk))
                yield chunk
        except BaseException:
            watch.failed = True
            raise
        watch.ended = True

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            self._watch.close()


def closing(body: Iterable[bytes], on_close: Callable[[], None]) -> Iterable[bytes]:
    """``body`` with ``on_close()`` run once after the server closes it (e.g. to reset a context variable
    set for the request: a WSGI body is iterated after the app returned)."""
    return _Closing(body, on_close)


class _Closing:
    __slots__ = ("_done", "_inner", "_on_close")

    def __init__(self, inner: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._inner = inner
        self._on_close = on_close
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._inner)

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            if not self._done:
                self._done = True
                self._on_close()
