"""Token counting shared by the mock provider and the quota estimate (deterministic, no tokenizer download).

A token is a word or a single punctuation character, with the whitespace before it. Real models count
differently; what matters here is that the estimate, the mock's usage and the streamed chunks agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_PIECE = re.compile(r"\s*(?:\w+|[^\w\s])|\s+$")
#: Tokens a chat message costs beyond its text (role and separators), as in OpenAI's accounting.
PER_MESSAGE_TOKENS = 3
#: Tokens that prime the assistant's reply.
REPLY_PRIMER_TOKENS = 3


def split_tokens(text: str) -> list[str]:
    """``text`` cut into tokens; joining them gives ``text`` back (up to trailing whitespace)."""
    return [piece for piece in _PIECE.findall(text) if piece.strip()]


def count_tokens(text: str) -> int:
    return len(split_tokens(text))


def count_chat_prompt_tokens(message_texts: Iterable[str]) -> int:
    return sum(count_tokens(text) + PER_MESSAGE_TOKENS for text in message_texts) + REPLY_PRIMER_TOKENS
