"""What the engine answers: per-limit results, admissions, reservations, errors (pure data)."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class QuotaType(enum.StrEnum):
    """A tenant-wide quota addressed by the ``check`` / ``increment`` API."""

    REQUESTS_PER_MINUTE = "requests_per_minute"
    REQUESTS_PER_DAY = "requests_per_day"
    TOKENS_PER_MINUTE = "tokens_per_minute"
    TOKENS_PER_DAY = "tokens_per_day"
    REQUESTS_PER_MONTH = "requests_per_month"
    TOKENS_PER_MONTH = "tokens_per_month"


class FailurePolicy(enum.StrEnum):
    """What to do when Redis cannot be reached."""

    OPEN = "open"
    CLOSED = "closed"
    LOCAL = "local"


class QuotaError(Exception):
    """Base class of llmproxy-quota errors."""


class InvalidQuotaRequest(QuotaError, ValueError):
    """An argument is malformed (negative cost, bad tenant id, unknown quota type...). Names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ModelNotAllowed(QuotaError):
    """The request's API key may not use the request's model (its allow-list lacks it). Nothing was
    consumed."""

    def __init__(self, model: str, api_key_id: str) -> None:
        super().__init__(f"the API key {api_key_id} may not use the model {model[:200]!r}")
        self.model = model
        self.api_key_id = api_key_id


class ModelNotPriced(QuotaError):
    """A spend budget applies, the model has no price, and unpriced models are refused
    (``unpriced="deny"``)."""

    def __init__(self, model: str | None) -> None:
        what = "a request without a model" if model is None else f"the model {model[:200]!r}"
        super().__init__(f"a spend budget applies and {what} has no price")
        self.model = model


class UnknownTenant(QuotaError, LookupError):
    """The limits source knows no such tenant."""

    def __init__(self, tenant_id: str) -> None:
        super().__init__(f"tenant {tenant_id} is unknown to the rate-limit configuration")
        self.tenant_id = tenant_id


class LimitResult(NamedTuple):
    """One limit's verdict. Times are epoch seconds (UTC); ``retry_after`` is seconds, None when the request
    can never fit (its cost exceeds the limit or burst). (A NamedTuple: built on every request, cheaply.)"""

    name: str
    unit: str  # "requests", "tokens" or "spend" (micro-units of currency)
    window: str  # "minute", "day" or "month"
    allowed: bool
    limit: int
    remaining: int
    reset_at: float
    retry_after: float | None
    usage: int

    @property
    def is_budget(self) -> bool:
        """Calendar budgets (day/month) reject as ``insufficient_quota``, rates as ``rate_limit_exceeded``."""
        return self.window != "minute"


# Reservation, Admission and Settlement are built on every request: plain slotted dataclasses, read-only by
# convention (a frozen dataclass costs ~2 us more to build, measured, as its __init__ sets each field through
# object.__setattr__).


class TokenEstimate(NamedTuple):
    """What a request will cost at most: its prompt's tokens and the output tokens it may produce (its
    ``max_tokens``), and its model when the request names one (else the RequestContext's is used).

    Quota reserves ``input_tokens + output_tokens`` against token limits and, where a spend budget applies,
    ``price.input * input_tokens + price.output * output_tokens`` against it."""

    input_tokens: int
    output_tokens: int
    model: str | None = None

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    """A spend budget reached its soft threshold: raised once per budget and period (the script marks it)."""

    tenant_id: str
    api_key_id: str | None  # None: the tenant's budget
    name: str  # "tenant.spend_per_month", "api_key.spend_per_day"
    window: str  # "day" or "month"
    limit_micros: int
    threshold_micros: int
    spent_micros: int  # spent (and reserved) when the threshold was reached
    reset_at: float  # epoch seconds: when the period ends

    @property
    def remaining_micros(self) -> int:
        return max(0, self.limit_micros - self.spent_micros)


@dataclass(slots=True)
class Reservation:
    """Estimated tokens (and spend) held by an admitted request until :meth:`settle` charges the actual
    figures."""

    id: str
    tenant_id: str
    key: str  # its field in the tenant's state hash, "reservation:<id>", held until settled or the lease ends
    estimate: int
    limits: tuple[Any, ...]  # the token limits and spend budgets held (LimitSpec)
    local: bool = False
    #: per held limit (ms since the epoch): a budget's window the estimate was counted in; a per-minute rate's
    #: charge end (the key's TAT after the admit), which caps a refund at settle to what has not drained yet
    ends: tuple[int, ...] = ()
    #: the spend reserved (micro-units), and the price it was estimated with: the actual cost is computed
    #: with the same price, so a price changed meanwhile applies to later requests only
    estimate_cost: int = 0
    price: Any = None
    api_key_id: str | None = None

    def cost_of(self, input_tokens: int, output_tokens: int) -> int:
        """What ``input_tokens`` and ``output_tokens`` cost at the price this request was admitted with."""
        if self.price is None:
            return 0
        return int(self.price.tokens_cost_micros(input_tokens, output_tokens))


@dataclass(slots=True)
class Admission:
    """The decision for one request.

    ``allowed`` is what the caller must do (in shadow mode it is always True; ``shadow_rejected`` tells what
    enforcement would have done). ``degraded`` means Redis was unreachable and the failure policy decided.
    """

    allowed: bool
    results: tuple[LimitResult, ...]
    reservation: Reservation | None = None
    degraded: bool = False
    failure_policy: FailurePolicy | None = None
    shadow_rejected: bool = False
    from_deny_cache: bool = False
    request_id: str | None = field(default=None, compare=False)
    #: the spend budgets whose soft threshold this admission reached (each once per period)
    alerts: tuple[BudgetAlert, ...] = ()

    @property
    def budgets(self) -> tuple[LimitResult, ...]:
        """The spend budgets' results (unit ``spend``)."""
        return tuple(r for r in self.results if r.unit == "spend")

    @property
    def rejected(self) -> tuple[LimitResult, ...]:
        return tuple(r for r in self.results if not r.allowed)

    @property
    def retry_after(self) -> float | None:
        """Seconds until every rejecting limit could admit this request (None: never at this size)."""
        waits = [r.retry_after for r in self.rejected]
        if not waits:
            return None if self.rejected else 0.0
        if any(w is None for w in waits):
            return None
        return max(w for w in waits if w is not None)

    @property
    def unavailable(self) -> bool:
        """Rejected because Redis was unreachable under the ``closed`` policy (answer 503)."""
        return not self.allowed and self.degraded and self.failure_policy is FailurePolicy.CLOSED


@dataclass(slots=True)
class Settlement:
    """What :meth:`settle` did: ``settled`` is False when the reservation was already settled or expired."""

    settled: bool
    charged: int = 0  # actual - estimate: positive charged more, negative refunded
    degraded: bool = False
    charged_cost: int = 0  # the same for spend (micro-units)
    alerts: tuple[BudgetAlert, ...] = ()  # soft thresholds the actual cost reached


@dataclass(frozen=True, slots=True)
class QuotaCheckResult:
    """The original API's answer for one quota."""

    allowed: bool
    current_usage: int
    limit: int
    remaining: int
    reset_at: float


class QuotaExceeded(QuotaError):
    """Raised by ``guard`` when a request is not admitted."""

    def __init__(self, admission: Admission) -> None:
        names = ", ".join(r.name for r in admission.rejected) or "quota service unavailable"
        super().__init__(f"quota exceeded: {names}")
        self.admission = admission

    @property
    def retry_after(self) -> float | None:
        return self.admission.retry_after

    @property
    def status(self) -> int:
        """The HTTP status this refusal answers as: 429, or 503 when quota could not be checked."""
        return 503 if self.admission.unavailable else 429


def seconds(ms: int) -> float:
    return ms / 1000.0


def ceil_seconds(value: float | None) -> int | None:
    return None if value is None else max(0, math.ceil(value))
