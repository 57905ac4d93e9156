"""The quota clients' options, declared once: :class:`QuotaOptions` (frozen, validated)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator

from llmproxy.core import Clock, Options

from ._results import BudgetAlert, FailurePolicy, InvalidQuotaRequest, QuotaType
from ._validate import monthly_limits

#: the longest lease of an unsettled reservation (seconds): a stream lasts minutes; the bound keeps what the
#: script computes from it (the hash's expiry) far from the limits of its arithmetic
MAX_RESERVATION_TTL = 30 * 86400

Seconds = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class QuotaOptions(Options):
    """How a :class:`~llmproxy.quota.QuotaClient` / :class:`~llmproxy.quota.AsyncQuotaClient` behaves.

    - ``failure_policy``: with Redis unreachable, ``open`` admits (logged, counted), ``closed`` rejects (the
      middleware answers 503), ``local`` runs a per-process limiter at limit / ``expected_processes``.
    - ``shadow``: evaluate and report, never reject.
    - ``clock``: replaces Redis ``TIME`` (tests); None uses the server's time.
    - ``deny_cache``: remember rejections certain to repeat (a request limit until its retry-after, an
      exhausted token budget for at most ``deny_cache_max_ttl`` seconds) and answer them without Redis.
    - ``reservation_ttl``: how long an admitted request's token reservation waits for its settle (seconds).
    - ``monthly_limits``: tenant-wide calendar-month budgets (``tokens_per_month``, ``requests_per_month``).
    - ``retry_redis_after``: after a Redis failure, apply the failure policy for this many seconds before
      trying Redis again (0: try every call).
    - ``prices``: where spend budgets get a model's price (a :class:`~llmproxy.quota.PriceSource`, such as
      llmproxy-metering's ``PriceBook`` or :class:`~llmproxy.quota.StaticPrices`). Without one, every model
      is unpriced.
    - ``unpriced``: a request under a spend budget whose model has no price is refused (``deny``: 403
      ``model_not_priced``) or admitted at no cost and counted in ``stats.unpriced_admissions`` (``allow``).
    - ``on_budget_alert``: called with a :class:`~llmproxy.quota.BudgetAlert` when a spend budget reaches
      its soft threshold, once per budget and period (the gateway writes an audit event and a metric). It
      runs on the request path: it must not block. Its exceptions are logged.

    A bad value raises :class:`~llmproxy.quota.InvalidQuotaRequest` naming the option.
    """

    failure_policy: FailurePolicy = FailurePolicy.OPEN
    expected_processes: Annotated[int, Field(strict=True, ge=1)] = 1
    shadow: bool = False
    clock: Clock | None = None
    deny_cache: bool = True
    deny_cache_max_ttl: Annotated[Seconds, Field(ge=0)] = 1.0
    reservation_ttl: Annotated[Seconds, Field(gt=0, le=MAX_RESERVATION_TTL)] = 3600.0
    monthly_limits: Mapping[QuotaType, int] = Field(default_factory=dict)
    retry_redis_after: Annotated[Seconds, Field(ge=0, le=86400)] = 1.0
    prices: Any = None
    unpriced: Literal["deny", "allow"] = "deny"
    on_budget_alert: Callable[[BudgetAlert], None] | None = None

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _invalid(exc) from None

    @field_validator("prices")
    @classmethod
    def _prices(cls, value: object) -> object:
        if value is not None and not callable(getattr(value, "token_price", None)):
            raise InvalidQuotaRequest(
                "prices", f"must have a token_price(tenant_id, model) method, got {type(value).__name__}"
            )
        return value

    @field_validator("monthly_limits", mode="before")
    @classmethod
    def _monthly(cls, value: object) -> dict[QuotaType, int]:
        return monthly_limits(value)


def _invalid(exc: ValidationError) -> InvalidQuotaRequest:
    """The first error, as the field's own :class:`InvalidQuotaRequest` (ours where a validator raised it)."""
    error = exc.errors()[0]
    raised = (error.get("ctx") or {}).get("error")
    if isinstance(raised, InvalidQuotaRequest):
        return raised
    field = ".".join(str(part) for part in error["loc"]) or "options"
    return InvalidQuotaRequest(field, f"{error['msg']}, got {error.get('input')!r}")
