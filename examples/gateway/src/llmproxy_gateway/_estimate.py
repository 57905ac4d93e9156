"""The quota middleware's token estimate: what a request will cost at most, from its body alone.

Its split (prompt tokens, output tokens) and model let quota apply the model's limits and price the request
for spend budgets: prompt tokens at the input price plus ``max_tokens`` (or ``default_max_tokens``) at the
output price.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from llmproxy.core import Scope
from llmproxy.quota import TokenEstimate

from ._tokens import count_chat_prompt_tokens, count_tokens

MAX_ESTIMATE = 10_000_000


def _message_text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return ""


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _model(body: Any) -> str | None:
    model = body.get("model")
    return model if isinstance(model, str) and model else None


def _bounded(prompt: int, output: int, model: str | None) -> TokenEstimate:
    """At most :data:`MAX_ESTIMATE` tokens in all (the prompt first): a body may name any number."""
    prompt = min(prompt, MAX_ESTIMATE)
    return TokenEstimate(prompt, min(output, MAX_ESTIMATE - prompt), model)


def chat_estimate(body: Any, default_max_tokens: int) -> TokenEstimate:
    messages = body.get("messages")
    prompt = count_chat_prompt_tokens(_message_text(m) for m in messages) if isinstance(messages, list) else 0
    output = _positive_int(body.get("max_completion_tokens")) or _positive_int(body.get("max_tokens"))
    return _bounded(prompt, output or default_max_tokens, _model(body))


def _embedding_tokens(items: Any) -> int:
    if isinstance(items, str):
        return count_tokens(items)
    if isinstance(items, list):
        if items and all(isinstance(i, int) for i in items):
            return len(items)
        return sum(
            count_tokens(i) if isinstance(i, str) else len(i) if isinstance(i, list) else 0 for i in items
        )
    return 0


def embedding_estimate(body: Any) -> TokenEstimate:
    return _bounded(_embedding_tokens(body.get("input")), 0, _model(body))


def token_estimator(default_max_tokens: int) -> Callable[[Scope, bytes], int | TokenEstimate]:
    """``estimate_tokens(scope, body)`` for :class:`llmproxy.quota.QuotaMiddleware`.

    A chat completion: its prompt tokens, the requested output limit (or ``default_max_tokens``) and its
    model; embeddings: the input's tokens, no output, the model. A body that is not valid JSON, or nests too
    deeply for ``json.loads`` (the gateway's edge refuses those before they get here), estimates 0: the app
    answers it with a 400 and nothing is charged.
    """

    def estimate(scope: Scope, body: bytes) -> int | TokenEstimate:
        path = scope.get("path", "")
        if scope.get("method") != "POST" or path not in ("/v1/chat/completions", "/v1/embeddings"):
            return 0
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            return 0
        if not isinstance(parsed, dict):
            return 0
        if path.endswith("completions"):
            return chat_estimate(parsed, default_max_tokens)
        return embedding_estimate(parsed)

    return estimate
