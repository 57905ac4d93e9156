"""What every middleware needs at the edge: OpenAI-style error answers and bounded request bodies (ASGI and
WSGI).

An :class:`EdgeError` is an answer to send instead of calling the app: its status, the OpenAI error fields and
any extra headers. :func:`send_error` sends it on an ASGI ``send``, :func:`wsgi_error` through a WSGI
``start_response``. The body readers refuse a body over the limit with :class:`BodyTooLarge` (413) and a
malformed ``Content-Length`` with :class:`InvalidContentLength` (400), both ``EdgeError``\\ s.
"""

from __future__ import annotations

import http
from collections.abc import Sequence
from typing import Protocol

from ._errors import openai_error_body
from ._types import Message, Receive, Scope, Send, StartResponse, WSGIEnviron

Headers = Sequence[tuple[str, str]]
_JSON = (b"content-type", b"application/json")
_CHUNK = 64 * 1024


class EdgeError(Exception):
    """An OpenAI-style error answer: ``{"error": {"message", "type", "code", "param"}}`` with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Headers = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = tuple(headers)

    def body(self) -> bytes:
        return openai_error_body(self.message, self.type, self.code, self.param)


class BodyTooLarge(EdgeError):
    """The request body is larger than the configured maximum (413)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"Request body exceeds {max_bytes} bytes.", code="request_too_large")
        self.max_bytes = max_bytes


class InvalidContentLength(EdgeError):
    """A ``Content-Length`` that is not a non-negative decimal integer (400)."""

    def __init__(self, value: str) -> None:
        super().__init__(
            400,
            f"Invalid Content-Length header: {value[:40]!r}.",
            code="invalid_content_length",
            param="Content-Length",
        )


class ClientDisconnected(Exception):
    """The client went away before its request body was read."""


def status_line(status: int) -> str:
    """``"429 Too Many Requests"`` (WSGI status lines)."""
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Error"


async def send_json(send: Send, status: int, body: bytes, headers: Headers = ()) -> None:
    """A whole JSON response on an ASGI ``send``."""
    raw = [_JSON, *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers)]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(send: Send, error: EdgeError) -> None:
    """Answer with ``error`` (the app is not called)."""
    await send_json(send, error.status, error.body(), error.headers)


def wsgi_json(start_response: StartResponse, status: int, body: bytes, headers: Headers = ()) -> list[bytes]:
    """A whole JSON response through a WSGI ``start_response``; the body iterable to return."""
    start_response(
        status_line(status),
        [("content-type", "application/json"), *headers, ("content-length", str(len(body)))],
    )
    return [body]


def wsgi_error(start_response: StartResponse, error: EdgeError) -> list[bytes]:
    """Answer with ``error``: ``return wsgi_error(start_response, EdgeError(...))``."""
    return wsgi_json(start_response, error.status, error.body(), error.headers)


# -- request bodies ----------------------------------------------------------------------------------------


def content_length(value: object) -> int | None:
    """The declared body length: None when absent or empty, else a non-negative int (RFC 9110: digits only).

    Raises :class:`InvalidContentLength` for anything else (``"abc"``, ``"-1"``, ``"1.5"``, ``"+3"``)."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    text = text.strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()):
        raise InvalidContentLength(text)
    return int(text)


def _declared_length(scope: Scope) -> int | None:
    found: int | None = None
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            length = content_length(value)
            if found is not None and length != found:
                raise InvalidContentLength(bytes(value).decode("latin-1"))
            found = length
    return found


async def read_body(scope: Scope, receive: Receive, max_bytes: int) -> bytes:
    """The whole request body, at most ``max_bytes``.

    A ``Content-Length`` over the limit is refused before anything is read, a chunked body as soon as it
    passes the limit (:class:`BodyTooLarge`); a malformed one raises :class:`InvalidContentLength`; a client
    that disconnects raises :class:`ClientDisconnected`. Give the app the body again with :func:`replay_body`.
    """
    declared = _declared_length(scope)
    if declared is not None and declared > max_bytes:
        raise BodyTooLarge(max_bytes)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(max_bytes)
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that first hands out ``body`` (as one message), then defers to ``receive``."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _read_until_end(stream: _Readable, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(min(_CHUNK, max_bytes + 1 - size))
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(max_bytes)
        chunks.append(chunk)


def read_wsgi_body(environ: WSGIEnviron, max_bytes: int) -> bytes:
    """The whole body of a WSGI request, at most ``max_bytes``: ``CONTENT_LENGTH`` bytes; without one, to the
    end of a terminated input (chunked: ``wsgi.input_terminated``), else nothing (PEP 3333: reading past an
    absent length may block). Same errors as :func:`read_body`. Put it back with
    ``environ["wsgi.input"] = io.BytesIO(body)``."""
    length = content_length(environ.get("CONTENT_LENGTH"))
    stream = environ["wsgi.input"]
    if length is None:
        return _read_until_end(stream, max_bytes) if environ.get("wsgi.input_terminated") else b""
    if length > max_bytes:
        raise BodyTooLarge(max_bytes)
    if not length:
        return b""
    body: bytes = stream.read(length)
    return body


def header_values(scope: Scope, name: bytes) -> list[bytes]:
    """Every value of header ``name`` (lower-case bytes) in an ASGI scope."""
    return [bytes(v) for k, v in scope.get("headers") or () if k == name or k.lower() == name]


def path_prefixes(paths: Sequence[str], *, name: str = "paths") -> tuple[str, ...]:
    """Validated path prefixes for a middleware's ``paths`` option (empty: every path)."""
    if isinstance(paths, str):
        raise TypeError(f"{name} must be a sequence of path prefixes, not one string")
    prefixes = tuple(paths)
    for prefix in prefixes:
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise ValueError(f"{name}: every prefix must be a string starting with '/', got {prefix!r}")
    return prefixes


def path_under(path: str, prefixes: tuple[str, ...]) -> bool:
    """True when ``prefixes`` is empty (every path) or ``path`` starts with one of them."""
    return not prefixes or path.startswith(prefixes)
