"""HTTP decisions shared by the ASGI and WSGI middleware: headers, error statuses and bodies (pure)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from llmproxy.core import EdgeError, path_prefixes

from ._results import Admission, InvalidQuotaRequest, LimitResult, QuotaError

Headers = list[tuple[str, str]]
App = TypeVar("App")
Client = TypeVar("Client")
Request = TypeVar("Request")  # what ``estimate_tokens`` is given with the body: the ASGI scope, the environ


class Edge(Generic[App, Client, Request]):
    """What both middlewares are configured with (validated here once)."""

    def __init__(
        self,
        app: App,
        *,
        client: Client,
        estimate_tokens: Callable[[Request, bytes], int] | None = None,
        max_body_bytes: int = 8 * 1024 * 1024,
        require_tenant: bool = False,
        paths: Sequence[str] = (),
    ) -> None:
        if max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        self.paths = path_prefixes(paths)
        self.app = app
        self.client = client
        self.estimate_tokens = estimate_tokens
        self.max_body_bytes = max_body_bytes
        self.require_tenant = require_tenant


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


def rejection(admission: Admission, now: float) -> EdgeError:
    """The answer to a request the admission rejected: 429 (or 503 when Redis is unreachable under the
    ``closed`` policy), OpenAI-style."""
    if admission.unavailable:
        return EdgeError(
            503,
            "The quota service is unavailable; try again shortly.",
            type="service_unavailable",
            code="quota_unavailable",
            headers=[("retry-after", "1")],
        )
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
    headers = rate_limit_headers(admission, now)
    if retry is not None:
        headers.append(("retry-after", str(max(1, math.ceil(retry)))))
    return EdgeError(429, message, type=kind, code=kind, headers=headers)


#: a request without a tenant, where the middleware requires one
MISSING_TENANT = EdgeError(401, "No tenant: authenticate first.", code="missing_tenant")


def refusal(exc: QuotaError) -> EdgeError:
    """The answer to an admit that raised: an unknown tenant (403) or a malformed request (400)."""
    if isinstance(exc, InvalidQuotaRequest):
        return EdgeError(400, str(exc), code="invalid_quota_request", param=exc.field)
    return EdgeError(403, str(exc), code="unknown_tenant")


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
