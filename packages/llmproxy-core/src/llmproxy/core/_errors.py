"""OpenAI-style error bodies, shared by every middleware that answers for the app."""

from __future__ import annotations

import json


def openai_error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> bytes:
    """``{"error": {"message", "type", "code", "param"}}`` as UTF-8 JSON bytes."""
    return json.dumps(
        {"error": {"message": message, "type": type, "code": code, "param": param}}, separators=(",", ":")
    ).encode()
