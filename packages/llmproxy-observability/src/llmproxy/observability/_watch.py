"""A minimal response watcher: sees the start and every body part of a response through ``send``.

Stand-in for ``llmproxy.core.ResponseWatch`` until the core toolkit lands on ``main``; replaced by it then.
"""

from __future__ import annotations

from llmproxy.core import Message, Send

from ._request import ServerRequest


class ResponseWatch:
    """Wraps ``send``: reports the status and each non-empty body part to a :class:`ServerRequest`."""

    __slots__ = ("_request", "_send")

    def __init__(self, send: Send, request: ServerRequest) -> None:
        self._send = send
        self._request = request

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if message.get("body"):
                self._request.body_chunk(bool(message.get("more_body", False)))
        elif kind == "http.response.start":
            self._request.response_started(message["status"])
        await self._send(message)
