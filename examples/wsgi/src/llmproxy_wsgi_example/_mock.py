"""The mock provider: the same prompt gets the same reply, and tokens are counted as words."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmproxy.core import WSGIEnviron

CHAT_PATH = "/v1/chat/completions"
MAX_REPLY_TOKENS = 4096


def count_tokens(text: str) -> int:
    """A stand-in tokenizer: one token per whitespace-separated word (deterministic, dependency-free)."""
    return len(text.split())


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str
    input_tokens: int
    output_tokens: int


def mock_complete(messages: Sequence[tuple[str, str]], max_tokens: int) -> Completion:
    """Echo the last user message after a fixed preamble, cut at ``max_tokens`` words."""
    last_user = next((text for role, text in reversed(messages) if role == "user"), "")
    words = ("This is a mock reply from llmproxy. You said: " + (last_user.strip() or "nothing")).split()
    finish = "stop"
    if len(words) > max_tokens:
        words, finish = words[:max_tokens], "length"
    prompt_tokens = sum(count_tokens(text) + 1 for _, text in messages)  # +1: the role
    return Completion(" ".join(words), finish, prompt_tokens, len(words))


def completion_id(model: str, messages: Sequence[tuple[str, str]]) -> str:
    digest = hashlib.sha256(json.dumps([model, list(messages)]).encode()).hexdigest()
    return f"chatcmpl-{digest[:24]}"


def token_estimator(default_max_tokens: int) -> Callable[[WSGIEnviron, bytes], int]:
    """``estimate_tokens(environ, body)`` for the quota middleware: prompt words plus the output limit.

    A body that does not parse estimates 0: the app answers it with a 400 and nothing is charged.
    """

    def estimate(environ: WSGIEnviron, body: bytes) -> int:
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("PATH_INFO") != CHAT_PATH:
            return 0
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            return 0
        if not isinstance(parsed, dict):
            return 0
        messages = parsed.get("messages")
        prompt = 0
        if isinstance(messages, list):
            for message in messages:
                content = message.get("content") if isinstance(message, dict) else None
                prompt += (count_tokens(content) if isinstance(content, str) else 0) + 1
        limit = parsed.get("max_tokens")
        if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit <= MAX_REPLY_TOKENS:
            return prompt + limit
        return prompt + default_max_tokens

    return estimate
