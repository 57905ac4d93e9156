"""The OpenAI-compatible API. Business logic only: identity, limits and accounting live in middlewares.

The one thing a handler does for them is report usage through the core's usage channel
(:func:`llmproxy.core.report_usage`): once for a plain response, and chunk by chunk for a stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from llmproxy.core import current_context, report_usage

from ._flags import streaming_allowed
from ._openapi import errors
from ._providers import GatewayError, JSONObject, Provider, ProviderError
from ._schemas import ChatCompletionRequest, EmbeddingRequest
from ._tokens import count_chat_prompt_tokens, count_tokens


@dataclass(frozen=True)
class ModelCatalog:
    """The models the gateway serves, by kind."""

    chat: tuple[str, ...]
    embedding: tuple[str, ...]
    created: int = 1_700_000_000
    owned_by: str = "llmproxy"

    def check(self, model: str, kind: str) -> None:
        names = self.chat if kind == "chat" else self.embedding
        if model not in names:
            other = self.embedding if kind == "chat" else self.chat
            reason = f"is not a {kind} model" if model in other else "does not exist"
            raise GatewayError(404, f"the model '{model}' {reason}", code="model_not_found", param="model")


# Dependencies are ``async`` although they never await: FastAPI runs a plain ``def`` in its thread pool.
async def get_provider(request: Request) -> Provider:
    provider: Provider = request.app.state.provider
    return provider


async def get_catalog(request: Request) -> ModelCatalog:
    catalog: ModelCatalog = request.app.state.catalog
    return catalog


ProviderDep = Annotated[Provider, Depends(get_provider)]
CatalogDep = Annotated[ModelCatalog, Depends(get_catalog)]

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible API"])


@router.get("/models", summary="List the models this gateway serves", responses=errors(401, 403, 429, 503))
async def list_models(catalog: CatalogDep) -> JSONObject:
    data = [
        {"id": name, "object": "model", "created": catalog.created, "owned_by": catalog.owned_by}
        for name in (*catalog.chat, *catalog.embedding)
    ]
    return {"object": "list", "data": data}


def _report(model: str, usage: Any, *, final: bool = True) -> None:
    if isinstance(usage, dict):
        report_usage(
            model=model,
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            final=final,
        )


#: What a completion or embedding request can be answered with besides its result.
_MODEL_CALL_ERRORS = errors(400, 401, 403, 404, 413, 429, 502, 503, 504)
_SSE: dict[str, Any] = {"text/event-stream": {}}  # each event's data: a chat.completion.chunk


@router.post(
    "/chat/completions",
    summary="Create a chat completion (plain or SSE stream)",
    response_model=None,
    responses={
        200: {
            "description": "A completion (JSON), or with `stream: true` its chunks as SSE.",
            "content": _SSE,
        },
        **_MODEL_CALL_ERRORS,
    },
)
async def create_chat_completion(
    body: ChatCompletionRequest, provider: ProviderDep, catalog: CatalogDep
) -> JSONResponse | StreamingResponse:
    catalog.check(body.model, "chat")
    if body.stream and not streaming_allowed(current_context()):
        raise GatewayError(
            403,
            'Streaming is not enabled for this tenant; send "stream": false.',
            type="permission_error",
            code="feature_disabled",
            param="stream",
        )
    if not body.stream:
        result = await provider.chat(body, body.model)
        _report(body.model, result.get("usage"))
        return JSONResponse(result)
    chunks = aiter(provider.stream_chat(body, body.model))
    try:
        # Pull the first chunk here, so an upstream refusal is a proper HTTP error and not a broken stream.
        first = await anext(chunks)
    except StopAsyncIteration:
        raise ProviderError(
            502, "upstream sent an empty stream", type="api_error", code="upstream_error"
        ) from None
    return StreamingResponse(
        _sse(body, first, chunks),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def _sse(
    body: ChatCompletionRequest, first: JSONObject, rest: AsyncIterator[JSONObject]
) -> AsyncIterator[str]:
    """Relay chunks as SSE, reporting usage so far after each (final usage with the provider's last chunk)."""
    prompt_tokens = count_chat_prompt_tokens(body.prompt_text())
    streamed = 0
    chunk: JSONObject | None = first
    try:
        while chunk is not None:
            usage = chunk.get("usage")
            if usage:
                _report(body.model, usage, final=True)
            else:
                for choice in chunk.get("choices") or ():
                    streamed += count_tokens((choice.get("delta") or {}).get("content") or "")
                report_usage(
                    model=body.model, input_tokens=prompt_tokens, output_tokens=streamed, final=False
                )
            if body.include_usage or not (usage and not chunk.get("choices")):
                if not body.include_usage:
                    chunk.pop("usage", None)
                yield f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"
            chunk = await anext(rest, None)
    except GatewayError as exc:
        error = {"error": {"message": exc.message, "type": exc.type, "code": exc.code, "param": None}}
        yield f"data: {json.dumps(error)}\n\n"
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()
    yield "data: [DONE]\n\n"


@router.post("/embeddings", summary="Create embeddings", responses=_MODEL_CALL_ERRORS)
async def create_embeddings(
    body: EmbeddingRequest, provider: ProviderDep, catalog: CatalogDep
) -> JSONResponse:
    catalog.check(body.model, "embedding")
    result = await provider.embed(body, body.model)
    usage = result.get("usage") or {}
    report_usage(
        model=body.model, input_tokens=int(usage.get("prompt_tokens") or 0), output_tokens=0, final=True
    )
    return JSONResponse(result)
