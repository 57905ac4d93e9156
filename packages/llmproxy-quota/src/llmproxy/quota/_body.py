"""Request-body decisions for the middleware (pure, no framework): Content-Length parsing, bounded reads."""

from __future__ import annotations

from typing import Protocol

CHUNK = 64 * 1024


class InvalidContentLength(ValueError):
    """A Content-Length that is not a non-negative decimal integer."""


class BodyTooLarge(Exception):
    """The body is larger than the configured maximum."""


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def content_length(value: object) -> int | None:
    """The declared body length: None when absent or empty, else a non-negative int (RFC 9110: digits only).

    Raises :class:`InvalidContentLength` for anything else ("abc", "-1", "1.5", "+3")."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    text = text.strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()):
        raise InvalidContentLength(f"Invalid Content-Length header: {text[:40]!r}.")
    return int(text)


def read_until_end(stream: _Readable, limit: int) -> bytes:
    """Read a body of unknown length (chunked: WSGI ``wsgi.input_terminated``) to its end, in chunks,
    reading at most ``limit + 1`` bytes; raises :class:`BodyTooLarge` past ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(min(CHUNK, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
