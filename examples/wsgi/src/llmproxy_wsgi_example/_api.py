"""The business logic alone, as a plain WSGI app: OpenAI-compatible routes, no concern of the middlewares.

It knows nothing of keys, limits, flags, usage records or audit trails: it answers the request and reports
the tokens it used with ``llmproxy.core.report_usage``; the middlewares around it do the rest.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmproxy.core import (
    EdgeError,
    StartResponse,
    WSGIEnviron,
    read_wsgi_body,
    report_usage,
    wsgi_error,
    wsgi_json,
)
from llmproxy.observability import ROUTE_KEY

from ._mock import CHAT_PATH, MAX_REPLY_TOKENS, completion_id, mock_complete

Handler = Callable[[WSGIEnviron, StartResponse], Iterable[bytes]]


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str = Field(max_length=1_000_000)


class ChatRequest(BaseModel):
    """The part of OpenAI's chat completion request the example understands (other fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    messages: list[Message] = Field(min_length=1, max_length=1000)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_REPLY_TOKENS, strict=True)
    stream: bool = False


def invalid_request(exc: ValidationError) -> EdgeError:
    """A 400 naming the first field pydantic refused (``messages.0.role``), OpenAI-style."""
    first = exc.errors()[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    return EdgeError(400, f"{param or 'body'}: {first['msg']}", code="invalid_request", param=param)


class ChatAPI:
    """``GET /v1/models``, ``POST /v1/chat/completions`` (non-streaming) and ``GET /healthz``."""

    def __init__(self, *, models: Sequence[str], default_max_tokens: int, max_body_bytes: int) -> None:
        self.models = tuple(models)
        self.default_max_tokens = default_max_tokens
        self.max_body_bytes = max_body_bytes
        self.routes: dict[str, tuple[str, Handler]] = {
            "/healthz": ("GET", self.healthz),
            "/v1/models": ("GET", self.list_models),
            CHAT_PATH: ("POST", self.chat_completions),
        }

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        route = self.routes.get(path)
        if route is None:
            return wsgi_error(
                start_response, EdgeError(404, f"Unknown path {path[:200]!r}.", code="not_found")
            )
        method, handler = route
        if environ.get("REQUEST_METHOD") != method:
            error = EdgeError(
                405, f"{path} accepts {method} only.", code="method_not_allowed", headers=[("allow", method)]
            )
            return wsgi_error(start_response, error)
        environ[ROUTE_KEY] = path  # the span's http.route (no templates here: every route is literal)
        try:
            return handler(environ, start_response)
        except EdgeError as exc:
            return wsgi_error(start_response, exc)

    def healthz(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        return wsgi_json(start_response, 200, b'{"status":"ok"}')

    def list_models(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "llmproxy"} for m in self.models]
        return wsgi_json(start_response, 200, json.dumps({"object": "list", "data": data}).encode())

    def chat_completions(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        request = self._parse(read_wsgi_body(environ, self.max_body_bytes))
        if request.stream:
            raise EdgeError(400, "This example does not stream: send stream=false.", param="stream")
        if request.model not in self.models:
            raise EdgeError(
                404, f"The model {request.model!r} does not exist.", code="model_not_found", param="model"
            )
        messages = [(m.role, m.content) for m in request.messages]
        reply = mock_complete(messages, request.max_tokens or self.default_max_tokens)
        report_usage(model=request.model, input_tokens=reply.input_tokens, output_tokens=reply.output_tokens)
        body = {
            "id": completion_id(request.model, messages),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text},
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": reply.input_tokens,
                "completion_tokens": reply.output_tokens,
                "total_tokens": reply.input_tokens + reply.output_tokens,
            },
        }
        return wsgi_json(start_response, 200, json.dumps(body).encode())

    @staticmethod
    def _parse(raw: bytes) -> ChatRequest:
        try:
            parsed = json.loads(raw)
        except (ValueError, RecursionError):
            raise EdgeError(400, "The request body is not valid JSON.", code="invalid_json") from None
        if not isinstance(parsed, dict):
            raise EdgeError(400, "The request body must be a JSON object.", code="invalid_json")
        try:
            return ChatRequest.model_validate(parsed)
        except ValidationError as exc:
            raise invalid_request(exc) from None
