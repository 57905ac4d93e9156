"""The provider interface: what the handlers need from an LLM backend, in OpenAI's JSON shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from ._schemas import ChatCompletionRequest, EmbeddingRequest

JSONObject = dict[str, Any]


class GatewayError(Exception):
    """An error the gateway answers with an OpenAI-style JSON body."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}


class ProviderError(GatewayError):
    """The provider could not answer (upstream down, timed out, or refused)."""


@runtime_checkable
class Provider(Protocol):
    """An LLM backend. Results are OpenAI-shaped JSON objects and always carry ``usage``.

    ``stream_chat`` yields ``chat.completion.chunk`` objects; its last chunk has empty ``choices`` and the
    final ``usage`` (whether or not the client asked for it: the gateway needs it to settle quotas).
    """

    async def chat(self, request: ChatCompletionRequest, model: str) -> JSONObject: ...

    def stream_chat(self, request: ChatCompletionRequest, model: str) -> AsyncIterator[JSONObject]: ...

    async def embed(self, request: EmbeddingRequest, model: str) -> JSONObject: ...

    async def aclose(self) -> None: ...
