"""The mock LLM: the same prompt gets the same reply; tokens are counted as words."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

PROVIDER = "mock"


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str
    input_tokens: int
    output_tokens: int


#: What the worker calls: ``llm(model, prompt, max_tokens)``.
LLM = Callable[[str, str, int], Completion]


def count_tokens(text: str) -> int:
    """A stand-in tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def mock_llm(model: str, prompt: str, max_tokens: int) -> Completion:
    """A fixed preamble echoing the prompt, cut at ``max_tokens`` words."""
    words = f"Mock {model} reply to: {prompt.strip()}".split()
    finish = "stop"
    if len(words) > max_tokens:
        words, finish = words[:max_tokens], "length"
    return Completion(" ".join(words), finish, count_tokens(prompt), len(words))
