"""The built-in deterministic mock provider: same prompt, same answer, honest token counts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import struct
import time
import uuid
from collections.abc import AsyncIterator

from ._providers import JSONObject
from ._schemas import ChatCompletionRequest, EmbeddingRequest
from ._tokens import count_chat_prompt_tokens, count_tokens, split_tokens

DEFAULT_REPLY_TOKENS = 32
DEFAULT_DIMENSIONS = 16


def mock_reply(request: ChatCompletionRequest) -> tuple[list[str], str]:
    """The reply's tokens and finish reason: a fixed preamble echoing the last user message."""
    last_user = next((m.text() for m in reversed(request.messages) if m.role == "user"), "")
    text = "This is a mock reply from llmproxy. You said: " + (last_user.strip() or "nothing")
    tokens = split_tokens(text)
    limit = request.output_limit or DEFAULT_REPLY_TOKENS
    if len(tokens) > limit:
        return tokens[:limit], "length"
    return tokens, "stop"


def mock_embedding(text_or_tokens: str | list[int], dimensions: int) -> list[float]:
    seed = text_or_tokens.encode() if isinstance(text_or_tokens, str) else str(text_or_tokens).encode()
    raw: list[float] = []
    counter = 0
    while len(raw) < dimensions:
        digest = hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        raw.extend((b - 127.5) / 127.5 for b in digest)
        counter += 1
    vector = raw[:dimensions]
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def _usage(prompt: int, completion: int) -> JSONObject:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class MockProvider:
    """Generates text from the prompt, counts tokens with :mod:`._tokens`, streams one token per chunk.

    ``chunk_delay`` seconds pass between streamed chunks (0: none).
    """

    def __init__(self, *, chunk_delay: float = 0.0) -> None:
        if chunk_delay < 0:
            raise ValueError("chunk_delay must be >= 0")
        self._chunk_delay = chunk_delay

    async def chat(self, request: ChatCompletionRequest, model: str) -> JSONObject:
        tokens, finish = mock_reply(request)
        prompt = count_chat_prompt_tokens(request.prompt_text())
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "llmproxy-mock",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(tokens), "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": _usage(prompt, len(tokens)),
        }

    async def stream_chat(self, request: ChatCompletionRequest, model: str) -> AsyncIterator[JSONObject]:
        tokens, finish = mock_reply(request)
        prompt = count_chat_prompt_tokens(request.prompt_text())
        head = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "llmproxy-mock",
        }

        def chunk(delta: JSONObject, finish_reason: str | None = None) -> JSONObject:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {**head, "choices": [choice]}

        yield chunk({"role": "assistant", "content": ""})
        for token in tokens:
            if self._chunk_delay:
                await asyncio.sleep(self._chunk_delay)
            yield chunk({"content": token})
        yield chunk({}, finish)
        yield {**head, "choices": [], "usage": _usage(prompt, len(tokens))}

    async def embed(self, request: EmbeddingRequest, model: str) -> JSONObject:
        dimensions = request.dimensions or DEFAULT_DIMENSIONS
        texts = request.texts()
        items: list[str | list[int]] = list(texts) if texts is not None else list(request.token_lists())
        prompt = sum(count_tokens(i) if isinstance(i, str) else len(i) for i in items)
        data = []
        for index, item in enumerate(items):
            vector = mock_embedding(item, dimensions)
            embedding: list[float] | str = vector
            if request.encoding_format == "base64":
                embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        }

    async def aclose(self) -> None:
        return None
