"""HTTP decisions shared by the ASGI and WSGI middleware: headers, error statuses and bodies (pure)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from llmproxy.core import EdgeError, path_prefixes

from ._results import (
    Admission,
    InvalidQuotaRequest,
    LimitResult,
    ModelNotAllowed,
    ModelNotPriced,
    QuotaError,
    Reservation,
    TokenEstimate,
)

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
        estimate_tokens: Callable[[Request, bytes], int | TokenEstimate] | None = None,
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
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` for the most binding limit of each unit;
    under a spend budget, ``x-budget-{limit,remaining,reset}`` (micro-units of currency) for the most
    binding one, and ``x-budget-warning`` once its soft threshold is reached."""
    headers: Headers = []
    for unit in ("requests", "tokens"):
        r = _binding(admission.results, unit)
        if r is not None:
            headers += [
                (f"x-ratelimit-limit-{unit}", str(r.limit)),
                (f"x-ratelimit-remaining-{unit}", str(r.remaining)),
                (f"x-ratelimit-reset-{unit}", duration(r.reset_at - now)),
            ]
    budget = _binding(admission.results, "spend")
    if budget is not None:
        headers += [
            ("x-budget-limit", str(budget.limit)),
            ("x-budget-remaining", str(budget.remaining)),
            ("x-budget-reset", duration(budget.reset_at - now)),
        ]
        if budget.usage >= _soft_threshold(admission, budget.name):
            headers.append(("x-budget-warning", f"{budget.name} is past its soft threshold"))
    return headers


def _soft_threshold(admission: Admission, name: str) -> float:
    """The soft threshold of the budget ``name`` (from the spec its reservation holds), else infinity."""
    reservation = admission.reservation
    for spec in reservation.limits if reservation is not None else ():
        if spec.name == name and spec.burst > 0:
            return float(spec.burst)
    return math.inf


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
    """The answer to an admit that raised: a malformed request (400), a model the key may not use or that
    has no price under a spend budget (403), an unknown tenant (403)."""
    if isinstance(exc, InvalidQuotaRequest):
        return EdgeError(400, str(exc), code="invalid_quota_request", param=exc.field)
    if isinstance(exc, ModelNotAllowed):
        return EdgeError(403, str(exc), type="invalid_request_error", code="model_not_allowed", param="model")
    if isinstance(exc, ModelNotPriced):
        return EdgeError(403, str(exc), type="invalid_request_error", code="model_not_priced", param="model")
    return EdgeError(403, str(exc), code="unknown_tenant")


def tokens_to_settle(
    reported: bool, reported_tokens: int, estimate: int | TokenEstimate, status: int | None, failed: bool
) -> int:
    """What a finished request is charged: the reported usage (for a stream cut short, what was streamed
    so far); with nothing reported, the estimate for a success, 0 when the app failed or answered an error."""
    if reported:
        return reported_tokens
    if failed or status is None or status >= 400:
        return 0
    return estimate if isinstance(estimate, int) else estimate.total


def cost_to_settle(
    reservation: Reservation,
    reported: bool,
    input_tokens: int,
    output_tokens: int,
    status: int | None,
    failed: bool,
) -> int | None:
    """The spend a finished request is charged, at the price it was admitted with (as
    :func:`tokens_to_settle`): the reported usage's cost; with nothing reported, the estimate (None) for a
    success, 0 when the app failed or answered an error. None without a spend budget."""
    if not any(spec.unit == "spend" for spec in reservation.limits):
        return None
    if reported:
        return reservation.cost_of(input_tokens, output_tokens)
    if failed or status is None or status >= 400:
        return 0
    return None


def check_estimate(value: object) -> int | TokenEstimate:
    if isinstance(value, TokenEstimate):
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"estimate_tokens must return a non-negative int or a TokenEstimate, got {value!r}")
    return value
