"""An OpenAI-compatible upstream provider over httpx (OpenAI itself, vLLM, Ollama, another gateway...)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from llmproxy.observability import GenAIClientCall, genai_call

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
        url = self._client.base_url
        self._server = (url.host, url.port or (443 if url.scheme == "https" else 80))

    def upstream_model(self, model: str) -> str:
        return self._model_map.get(model, model)

    def _traced(self, operation: str, body: JSONObject, *, stream: bool = False) -> Any:
        """A CLIENT span for the upstream call (llmproxy-observability), its context sent upstream."""
        return genai_call(
            operation,
            provider="openai",  # the upstream speaks OpenAI's API, whoever serves it
            request_model=str(body.get("model") or "") or None,
            server_address=self._server[0],
            server_port=self._server[1],
            stream=stream,
            max_tokens=body.get("max_tokens") if isinstance(body.get("max_tokens"), int) else None,
        )

    async def _post(self, path: str, body: JSONObject, operation: str) -> JSONObject:
        with self._traced(operation, body) as call:
            headers: dict[str, str] = {}
            call.inject(headers)
            try:
                response = await self._client.post(path, json=body, headers=headers)
            except httpx.HTTPError as exc:
                call.fail(type(exc).__name__)
                raise _transport_error(exc) from exc
            if response.status_code >= 400:
                call.fail(str(response.status_code))
                raise _upstream_error(response)
            try:
                result: JSONObject = response.json()
            except ValueError as exc:
                call.fail("invalid_response")
                raise ProviderError(
                    502, "upstream sent invalid JSON", type="api_error", code="upstream_error"
                ) from exc
            _record_response(call, result)
            return result

    async def chat(self, request: ChatCompletionRequest, model: str) -> JSONObject:
        body = dump_for_upstream(request, self.upstream_model(model))
        for name in _GATEWAY_FIELDS:
            body.pop(name, None)
        return await self._post("chat/completions", body, "chat")

    async def stream_chat(self, request: ChatCompletionRequest, model: str) -> AsyncIterator[JSONObject]:
        body = dump_for_upstream(
            request, self.upstream_model(model), stream=True, stream_options={"include_usage": True}
        )
        with self._traced("chat", body, stream=True) as call:
            headers: dict[str, str] = {}
            call.inject(headers)
            try:
                async with self._client.stream(
                    "POST", "chat/completions", json=body, headers=headers
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        call.fail(str(response.status_code))
                        raise _upstream_error(response)
                    async for line in response.aiter_lines():
                        chunk = _parse_sse_line(line)
                        if chunk is _DONE:
                            return
                        if chunk is not None:
                            call.chunk()
                            _record_response(call, chunk)
                            yield chunk
            except httpx.HTTPError as exc:
                call.fail(type(exc).__name__)
                raise _transport_error(exc) from exc

    async def embed(self, request: EmbeddingRequest, model: str) -> JSONObject:
        body = dump_for_upstream(request, self.upstream_model(model))
        return await self._post("embeddings", body, "embeddings")

    async def aclose(self) -> None:
        await self._client.aclose()


def _record_response(call: GenAIClientCall, result: JSONObject) -> None:
    """The response model, id, usage and finish reasons of a result or chunk, on the call's span."""
    usage = result.get("usage") if isinstance(result.get("usage"), dict) else None
    reasons = [
        str(choice["finish_reason"])
        for choice in result.get("choices") or ()
        if isinstance(choice, dict) and choice.get("finish_reason")
    ]
    call.response(
        model=result.get("model") if isinstance(result.get("model"), str) else None,
        response_id=result.get("id") if isinstance(result.get("id"), str) else None,
        input_tokens=_count(usage, "prompt_tokens"),
        output_tokens=_count(usage, "completion_tokens"),
        finish_reasons=reasons or None,
    )


def _count(usage: JSONObject | None, name: str) -> int | None:
    value = usage.get(name) if usage else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


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
