"""An OpenAI-compatible upstream provider over httpx (OpenAI itself, vLLM, Ollama, another gateway...)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from ._providers import JSONObject, ProviderError
from ._schemas import ChatCompletionRequest, EmbeddingRequest, dump_for_upstream

#: Fields the gateway answers for itself and never forwards.
_GATEWAY_FIELDS = frozenset({"stream", "stream_options"})


def _upstream_error(response: httpx.Response) -> ProviderError:
    """Map an upstream error status to what the gateway's client should see."""
    try:
        detail = response.json()["error"]["message"]
    except Exception:
        detail = response.text[:200] or response.reason_phrase
    status = response.status_code
    if status in (400, 404, 413, 422):
        return ProviderError(status, f"upstream rejected the request: {detail}", code="upstream_rejected")
    if status == 429:
        headers = (
            {"retry-after": response.headers["retry-after"]} if "retry-after" in response.headers else {}
        )
        return ProviderError(
            429,
            f"upstream rate limit: {detail}",
            type="rate_limit_error",
            code="upstream_rate_limited",
            headers=headers,
        )
    # 401/403 mean the gateway's own upstream credentials are wrong: not the client's fault.
    return ProviderError(502, f"upstream error {status}: {detail}", type="api_error", code="upstream_error")


def _transport_error(exc: httpx.HTTPError) -> ProviderError:
    if isinstance(exc, httpx.TimeoutException):
        return ProviderError(504, "upstream timed out", type="api_error", code="upstream_timeout")
    return ProviderError(
        502, f"upstream unreachable: {type(exc).__name__}", type="api_error", code="upstream_error"
    )


class UpstreamProvider:
    """Forwards requests to ``base_url`` (ending in ``/v1``), renaming models through ``model_map``."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        model_map: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._model_map = dict(model_map or {})
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/", headers=headers, timeout=timeout, transport=transport
        )

    def upstream_model(self, model: str) -> str:
        return self._model_map.get(model, model)

    async def _post(self, path: str, body: JSONObject) -> JSONObject:
        try:
            response = await self._client.post(path, json=body)
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from exc
        if response.status_code >= 400:
            raise _upstream_error(response)
        try:
            result: JSONObject = response.json()
        except ValueError as exc:
            raise ProviderError(
                502, "upstream sent invalid JSON", type="api_error", code="upstream_error"
            ) from exc
        return result

    async def chat(self, request: ChatCompletionRequest, model: str) -> JSONObject:
        body = dump_for_upstream(request, self.upstream_model(model))
        for name in _GATEWAY_FIELDS:
            body.pop(name, None)
        return await self._post("chat/completions", body)

    async def stream_chat(self, request: ChatCompletionRequest, model: str) -> AsyncIterator[JSONObject]:
        body = dump_for_upstream(
            request, self.upstream_model(model), stream=True, stream_options={"include_usage": True}
        )
        try:
            async with self._client.stream("POST", "chat/completions", json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _upstream_error(response)
                async for line in response.aiter_lines():
                    chunk = _parse_sse_line(line)
                    if chunk is _DONE:
                        return
                    if chunk is not None:
                        yield chunk
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from exc

    async def embed(self, request: EmbeddingRequest, model: str) -> JSONObject:
        return await self._post("embeddings", dump_for_upstream(request, self.upstream_model(model)))

    async def aclose(self) -> None:
        await self._client.aclose()


_DONE: Any = object()


def _parse_sse_line(line: str) -> JSONObject | None:
    """One ``data:`` line of an OpenAI stream: a chunk, ``_DONE``, or None for anything else."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        return _DONE  # type: ignore[no-any-return]
    try:
        chunk = json.loads(data)
    except ValueError as exc:
        raise ProviderError(
            502, "upstream sent an invalid stream chunk", type="api_error", code="upstream_error"
        ) from exc
    if isinstance(chunk, dict) and "error" in chunk:
        message = str((chunk.get("error") or {}).get("message", "upstream stream error"))
        raise ProviderError(502, message, type="api_error", code="upstream_error")
    return chunk if isinstance(chunk, dict) else None
