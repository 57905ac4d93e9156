"""HTTP decisions shared by the ASGI and WSGI middleware: headers, error statuses and bodies (pure)."""

from __future__ import annotations

import math

from llmproxy.core import openai_error_body

from ._results import Admission, LimitResult

Headers = list[tuple[str, str]]
JSON = ("content-type", "application/json")


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``"20ms"``, ``"1.5s"``, ``"6m0s"``, ``"1h2m3s"``."""
    ms = max(0, math.ceil(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs = f"{ms / 1000:.3f}".rstrip("0").rstrip(".")
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    return f"{out}{secs}s"


def _binding(results: tuple[LimitResult, ...], unit: str) -> LimitResult | None:
    """The limit of ``unit`` closest to rejecting (fewest remaining, then the smaller limit)."""
    relevant = [r for r in results if r.unit == unit]
    if not relevant:
        return None
    return min(relevant, key=lambda r: (r.remaining, r.limit))


def rate_limit_headers(admission: Admission, now: float) -> Headers:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` for the most binding limit of each unit."""
    headers: Headers = []
    for unit in ("requests", "tokens"):
        r = _binding(admission.results, unit)
        if r is not None:
            headers += [
                (f"x-ratelimit-limit-{unit}", str(r.limit)),
                (f"x-ratelimit-remaining-{unit}", str(r.remaining)),
                (f"x-ratelimit-reset-{unit}", duration(r.reset_at - now)),
            ]
    return headers


def rejection(admission: Admission, now: float) -> tuple[int, Headers, bytes]:
    """Status, headers and OpenAI-style body for a request the admission rejected."""
    if admission.unavailable:
        body = openai_error_body(
            "The quota service is unavailable; try again shortly.", "service_unavailable", "quota_unavailable"
        )
        return 503, [JSON, ("retry-after", "1")], body
    rejected = admission.rejected
    budget = any(r.is_budget for r in rejected)
    names = ", ".join(r.name for r in rejected)
    retry = admission.retry_after
    if retry is None:
        message = f"Request too large for {names}: its cost exceeds the limit."
    elif budget:
        message = f"You exceeded your current quota ({names}); it resets in {duration(retry)}."
    else:
        message = f"Rate limit reached ({names}). Please try again in {duration(retry)}."
    kind = "insufficient_quota" if budget else "rate_limit_exceeded"
    headers: Headers = [JSON, *rate_limit_headers(admission, now)]
    if retry is not None:
        headers.append(("retry-after", str(max(1, math.ceil(retry)))))
    return 429, headers, openai_error_body(message, kind, kind)


def error(
    status: int, message: str, type: str, code: str, param: str | None = None
) -> tuple[int, Headers, bytes]:
    return status, [JSON], openai_error_body(message, type, code, param)


STATUS_TEXT = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    413: "Payload Too Large",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


def tokens_to_settle(
    reported: bool, reported_tokens: int, estimate: int, status: int | None, failed: bool
) -> int:
    """What a finished request is charged: the reported usage (for a stream cut short, what was streamed
    so far); with nothing reported, the estimate for a success, 0 when the app failed or answered an error."""
    if reported:
        return reported_tokens
    if failed or status is None or status >= 400:
        return 0
    return estimate


def check_estimate(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"estimate_tokens must return a non-negative int, got {value!r}")
    return value
