"""Redaction, applied before an event is queued: nothing secret leaves the process.

Keys are split into words (``x-api-key`` → ``x api key``, ``privateKey`` → ``private key``) and a key is
denied when one word, or two adjacent words joined, is on the deny-list: ``db_password`` and ``x-api-key`` are
redacted, ``max_tokens`` and ``input_tokens`` are not (``tokens`` is not ``token``). Strings anywhere are
searched for values shaped like secrets (``sk-…`` keys, bearer/basic credentials, JWTs) and those parts
replaced. Prompt and completion text (``messages``, ``prompt``, ``choices``, …) is omitted unless
``include_text``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[REDACTED]"
OMITTED = "[OMITTED]"

DEFAULT_DENY_KEYS: frozenset[str] = frozenset(
    { "password", "passwd", "pwd", "passphrase", "secret", "secrets", "token", "apikey", "authorization",
        "cookie", "cookies", "setcookie", "credential", "credentials", "privatekey", "secretkey", "accesskey",
        "accesstoken", "refreshtoken", "idtoken", "sessionid", "sessiontoken", "jwt", "bearer",
        "clientsecret", "otp", "ssn",
    }
)  # fmt: skip
DEFAULT_TEXT_KEYS: frozenset[str] = frozenset(
    { "messages", "prompt", "prompts", "completion", "completions", "choices", "content", "contents",
        "input", "instructions", "system", "suffix",
    }
)  # fmt: skip
DEFAULT_VALUE_PATTERNS: tuple[str, ...] = (
    r"\bsk-[A-Za-z0-9_\-]{8,}",  # OpenAI-style keys and llmproxy's own (sk-llmp-...)
    r"\b(?i:bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,}",
    r"\beyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*",  # a JWT
)

_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def key_words(key: str) -> list[str]:
    """``"X-API-Key"`` → ``["x", "api", "key"]``; ``"privateKey"`` → ``["private", "key"]``."""
    return [w.lower() for w in _WORDS.findall(key)]


class Redactor:
    """Redacts JSON-like values. Precomputes its matchers; caches each key's verdict (keys repeat a lot).

    ``deny_keys`` replaces the default deny-list, ``extra_deny_keys`` adds to it, ``allow_keys`` exempts keys
    (compared case-insensitively, as whole keys). ``value_patterns`` are regular expressions whose matches
    inside any string are replaced. ``include_text=True`` keeps prompt/completion text under ``text_keys``.
    """

    def __init__(
        self,
        *,
        deny_keys: Iterable[str] = DEFAULT_DENY_KEYS,
        extra_deny_keys: Iterable[str] = (),
        allow_keys: Iterable[str] = (),
        value_patterns: Iterable[str] = DEFAULT_VALUE_PATTERNS,
        include_text: bool = False,
        text_keys: Iterable[str] = DEFAULT_TEXT_KEYS,
        replacement: str = REDACTED,
        max_cached_keys: int = 10_000,
    ) -> None:
        self._deny = frozenset("".join(key_words(k)) for k in (*deny_keys, *extra_deny_keys))
        self._allow = frozenset(k.lower() for k in allow_keys)
        self._text = frozenset() if include_text else frozenset(k.lower() for k in text_keys)
        patterns = tuple(value_patterns)
        self._pattern = re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None
        self.replacement = replacement
        self._verdicts: dict[str, str | None] = {}
        self._max_cached = max_cached_keys

    def _verdict(self, key: str) -> str | None:
        """What replaces the value under ``key``: the redaction mark, the omission mark, or None (keep)."""
        verdict = self._verdicts.get(key, False)
        if verdict is not False:
            return verdict  # type: ignore[return-value]
        lowered = key.lower()
        result: str | None = None
        if lowered not in self._allow:
            if lowered in self._text:
                result = OMITTED
            else:
                words = key_words(key)
                pairs = (a + b for a, b in itertools.pairwise(words))
                if any(w in self._deny for w in words) or any(p in self._deny for p in pairs):
                    result = self.replacement
        if len(self._verdicts) < self._max_cached:
            self._verdicts[key] = result
        return result

    def redact_text(self, value: str) -> str:
        if self._pattern is None:
            return value
        return self._pattern.sub(self.replacement, value)

    def redact(self, value: Any) -> Any:
        """A redacted copy of ``value`` (dicts, lists, tuples, strings; other values as they are)."""
        if isinstance(value, str):
            return self.redact_text(value) if self._pattern is not None else value
        if isinstance(value, dict):
            out: dict[Any, Any] = {}
            for key, item in value.items():
                verdict = self._verdict(key) if isinstance(key, str) else None
                out[key] = self.redact(item) if verdict is None else verdict
            return out
        if isinstance(value, list | tuple):
            return [self.redact(item) for item in value]
        return value

    def redact_object(self, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else self.redact(value)

    def redact_json(self, value: Any, max_depth: int, depth: int = 1) -> Any:
        """:meth:`redact`, checking on the same walk that ``value`` is JSON (str keys, finite numbers) and at
        most ``max_depth`` containers deep (``ValueError`` otherwise): the publisher's one pass over them."""
        if isinstance(value, str):
            return self._pattern.sub(self.replacement, value) if self._pattern is not None else value
        if isinstance(value, dict):
            if depth > max_depth:
                raise ValueError(f"nested deeper than {max_depth} levels")
            out: dict[str, Any] = {}
            verdicts = self._verdicts
            sub = self._pattern.sub if self._pattern is not None else None
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ValueError(f"keys must be strings, got {type(key).__name__}")
                verdict = verdicts.get(key, False)
                if verdict is False:
                    verdict = self._verdict(key)
                if verdict is not None:
                    out[key] = verdict
                    continue
                # the common leaves inline (one call per container, not per value): exact types only, the
                # rest (floats, subclasses, containers) through the checks below
                kind = type(item)
                if kind is int or item is None or item is True or item is False:
                    out[key] = item
                elif kind is str:
                    out[key] = item if sub is None else sub(self.replacement, item)
                else:
                    out[key] = self.redact_json(item, max_depth, depth + 1)
            return out
        if isinstance(value, list | tuple):
            if depth > max_depth:
                raise ValueError(f"nested deeper than {max_depth} levels")
            return [self.redact_json(item, max_depth, depth + 1) for item in value]
        if value is None or value is True or value is False or type(value) is int:
            return value
        if type(value) is float:
            if value != value or value in (_INF, -_INF):
                raise ValueError("numbers must be finite")
            return value
        raise ValueError(f"not a JSON value: {type(value).__name__}")


_INF = float("inf")

DEFAULT_REDACTOR = Redactor()
