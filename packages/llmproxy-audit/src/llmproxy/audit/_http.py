"""What the HTTP adapters publish when a response ends (pure; shared by the ASGI and WSGI middleware)."""

from __future__ import annotations

from typing import Any

from llmproxy.core import Usage

#: The seed's event name.
LLM_REQUEST_COMPLETED = "llm_request_completed"
DEFAULT_PATHS = ("/v1/",)


def outcome_of(status: int) -> str:
    if status in (401, 403, 429):
        return "denied"
    return "success" if 0 < status < 400 else "failure"


def completed_metadata(
    usage: Usage | None,
    *,
    status: int,
    duration_s: float,
    method: str | None,
    path: str | None,
    ended: bool = True,
) -> dict[str, Any]:
    """Model, tokens, status, duration — never the prompt or the completion."""
    return {
        "model": usage.model if usage else None,
        "input_tokens": usage.input_tokens if usage else 0,
        "output_tokens": usage.output_tokens if usage else 0,
        "total_tokens": usage.total_tokens if usage else 0,
        "usage_final": bool(usage and usage.final),
        "status": status,
        "duration_ms": round(duration_s * 1000, 3),
        "method": method,
        "path": path,
        # False: the client went away (or the app failed) before the last chunk was sent
        "completed": ended,
    }
