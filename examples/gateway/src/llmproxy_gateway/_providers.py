"""The provider interface: what the handlers need from an LLM backend, in OpenAI's JSON shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from llmproxy.core import EdgeError

from ._schemas import ChatCompletionRequest, EmbeddingRequest

JSONObject = dict[str, Any]
Headers = Sequence[tuple[str, str]]


class GatewayError(EdgeError):
    """An error the gateway answers with an OpenAI-style JSON body (llmproxy-core's :class:`EdgeError`).

    ``status_code`` is ``status`` under Starlette's name; ``headers`` may be given as a mapping.
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | Headers = (),
    ) -> None:
        pairs = tuple(headers.items()) if isinstance(headers, Mapping) else tuple(headers)
        super().__init__(status_code, message, type=type, code=code, param=param, headers=pairs)

    @property
    def status_code(self) -> int:
        return self.status


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
