"""Which limits apply to a request, and each one as the script sees it (pure)."""

from __future__ import annotations

import dataclasses
import enum
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace

from llmproxy.core import RequestContext
from llmproxy.ratelimit_config import Budget, BudgetPeriod, Budgets, TenantRateLimitConfiguration

from ._results import InvalidQuotaRequest, QuotaType
from ._validate import check_endpoint, check_id, check_model, check_unlimited_path

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
#: limits above this are sent as this (the script's doubles are exact below 2^53; no cost can come near it)
_EXACT = 2**53
#: each limit's figures before its window end: kind, unit, limit, burst, period (see quota.lua)
_SPEC_HEAD = struct.Struct(">BBqqq")
_FIELD_LENGTH = struct.Struct(">H")


class LimitKind(enum.IntEnum):
    """How a limit counts (the values are the script's codes)."""

    RATE = 0  # a per-minute rate (GCRA: a steady refill, ``burst`` at once)
    DAY = 1  # a calendar day's budget (UTC, or a budget's whole-hour offset)
    MONTH = 2  # a calendar month's budget

    @property
    def window(self) -> str:
        return _WINDOWS[self]


_WINDOWS = {LimitKind.RATE: "minute", LimitKind.DAY: "day", LimitKind.MONTH: "month"}


class Unit(enum.StrEnum):
    """What a limit counts (the values are what :class:`~llmproxy.quota.LimitResult` reports)."""

    REQUESTS = "requests"
    TOKENS = "tokens"
    SPEND = "spend"  # micro-units of currency (a spend budget)


_UNIT_CODES = {Unit.REQUESTS: 0, Unit.TOKENS: 1, Unit.SPEND: 2}


_QUOTA_SHAPE: dict[QuotaType, tuple[Unit, LimitKind]] = {
    QuotaType.REQUESTS_PER_MINUTE: (Unit.REQUESTS, LimitKind.RATE),
    QuotaType.TOKENS_PER_MINUTE: (Unit.TOKENS, LimitKind.RATE),
    QuotaType.REQUESTS_PER_DAY: (Unit.REQUESTS, LimitKind.DAY),
    QuotaType.TOKENS_PER_DAY: (Unit.TOKENS, LimitKind.DAY),
    QuotaType.REQUESTS_PER_MONTH: (Unit.REQUESTS, LimitKind.MONTH),
    QuotaType.TOKENS_PER_MONTH: (Unit.TOKENS, LimitKind.MONTH),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitSpec:
    """One limit as the script sees it."""

    name: str
    unit: Unit
    kind: LimitKind
    key: str  # the limit's identity: its tenant's state key and its field (the deny cache's key)
    field: str  # its field in the tenant's state hash
    limit: int
    burst: int = 0  # a rate's burst; a spend budget's soft threshold (0: none)
    period_ms: int = MINUTE_MS  # a rate's period; a budget's UTC offset (ms)
    #: the API key a key-scoped limit belongs to (None: the tenant's, the endpoint's or the model's)
    api_key_id: str | None = None
    # derived once, read by every reply's parsing: "minute"/"day"/"month", and what usage is measured against
    window: str = dataclasses.field(init=False, compare=False)
    capacity: int = dataclasses.field(init=False, compare=False)
    # derived once: this limit's encoding (see quota.lua): its field, and its figures before the window end
    encoded_field: bytes = dataclasses.field(init=False, compare=False, repr=False)
    encoded_head: bytes = dataclasses.field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", self.kind.window)
        capacity = 0 if self.limit <= 0 else (self.burst if self.kind is LimitKind.RATE else self.limit)
        object.__setattr__(self, "capacity", capacity)
        unit = _UNIT_CODES[self.unit]
        limit, burst = min(self.limit, _EXACT), min(self.burst, _EXACT)
        head = _SPEC_HEAD.pack(self.kind, unit, limit, burst, self.period_ms)
        object.__setattr__(self, "encoded_field", encode_field(self.field))
        object.__setattr__(self, "encoded_head", head)

    def scaled(self, processes: int) -> LimitSpec:
        """This limit divided among ``processes`` (the ``local`` failure policy)."""
        if processes <= 1 or self.limit == 0:
            return self
        return replace(self, limit=max(1, self.limit // processes), burst=max(1, self.burst // processes))


def encode_field(name: str) -> bytes:
    """A field of the tenant's hash as the script reads it: its length (16 bits), its bytes."""
    raw = name.encode()
    return _FIELD_LENGTH.pack(len(raw)) + raw


def state_key(tenant: str) -> str:
    """The tenant's state: one hash, a field per limit (see quota.lua)."""
    return f"llmproxy:{{{tenant}}}:quota"


def _spec(
    tenant: str,
    field: str,
    *,
    name: str,
    unit: Unit,
    kind: LimitKind,
    limit: int,
    burst: int = 0,
    period_ms: int = MINUTE_MS,
) -> LimitSpec:
    key = f"{state_key(tenant)} {field}"
    return LimitSpec(
        name=name, unit=unit, kind=kind, key=key, field=field, limit=limit, burst=burst, period_ms=period_ms
    )


def _rate(tenant: str, name: str, scope: str, unit: Unit, limit: int, burst: int | None = None) -> LimitSpec:
    field = f"rate:{scope}:{unit}"
    burst = limit if burst is None else burst
    return _spec(tenant, field, name=name, unit=unit, kind=LimitKind.RATE, limit=limit, burst=burst)


def _budget(tenant: str, unit: Unit, kind: LimitKind, limit: int) -> LimitSpec:
    window = kind.window
    name = f"tenant.{unit}_per_{window}"
    return _spec(tenant, f"budget:{unit}:{window}", name=name, unit=unit, kind=kind, limit=limit, period_ms=0)


_BUDGET_KINDS = {BudgetPeriod.DAY: LimitKind.DAY, BudgetPeriod.MONTH: LimitKind.MONTH}


def spend_budgets(tenant: str, budgets: Budgets, api_key_id: str | None = None) -> list[LimitSpec]:
    """The spend budgets of the tenant (``api_key_id`` None) or of one of its keys, as the script sees
    them."""
    return [_spend(tenant, period, budget, api_key_id) for period, budget in budgets.items()]


def _spend(tenant: str, period: BudgetPeriod, budget: Budget, api_key_id: str | None) -> LimitSpec:
    kind = _BUDGET_KINDS[period]
    scope = "tenant" if api_key_id is None else f"key:{api_key_id}"
    field = f"budget:spend:{kind.window}:{scope}"
    return LimitSpec(
        name=f"{'tenant' if api_key_id is None else 'api_key'}.spend_per_{kind.window}",
        unit=Unit.SPEND,
        kind=kind,
        key=f"{state_key(tenant)} {field}",
        field=field,
        limit=budget.limit_micros,
        burst=max(1, budget.soft_limit_micros) if budget.limit_micros > 0 else 0,
        period_ms=budget.utc_offset_hours * HOUR_MS,
        api_key_id=api_key_id,
    )


def tenant_limit(
    tenant: str, config: TenantRateLimitConfiguration, qt: QuotaType, monthly: Mapping[QuotaType, int]
) -> LimitSpec:
    """The tenant-wide limit ``qt`` (``check`` / ``increment``)."""
    unit, kind = _QUOTA_SHAPE[qt]
    if kind is LimitKind.MONTH:
        if qt not in monthly:
            raise InvalidQuotaRequest("quota_type", f"no {qt.value} limit is configured on this client")
        return _budget(tenant, unit, kind, monthly[qt])
    configured = getattr(config.global_limit, qt.value, None)
    if configured is None:
        raise InvalidQuotaRequest("quota_type", f"no {qt.value} limit is configured for this tenant")
    limit = int(configured)
    if kind is LimitKind.RATE:
        return _rate(tenant, f"tenant.{qt.value}", "tenant", unit, limit)
    return _budget(tenant, unit, kind, limit)


def request_limits(
    tenant: str,
    config: TenantRateLimitConfiguration,
    ctx: RequestContext,
    monthly: Mapping[QuotaType, int],
    model: str | None = None,
) -> list[LimitSpec]:
    """Every limit that applies to a request: tenant rates and budgets, its API key's, its endpoint's, its
    model's, and the spend budgets of the tenant and of the key.

    A limit whose value is None (possible in a custom limits source, e.g. built with ``model_construct``) is
    not configured and not evaluated; 0 still means "nothing allowed"."""
    specs = [
        tenant_limit(tenant, config, qt, monthly)
        for qt in QuotaType
        if (
            qt in monthly
            if _QUOTA_SHAPE[qt][1] is LimitKind.MONTH
            else getattr(config.global_limit, qt.value, None) is not None
        )
    ]
    if ctx.api_key_id is not None:
        check_id("api_key_id", ctx.api_key_id)
        key = config.api_key_limit
        scope = f"key:{ctx.api_key_id}"
        if key.requests_per_minute is not None:
            specs.append(
                _rate(tenant, "api_key.requests_per_minute", scope, Unit.REQUESTS, key.requests_per_minute)
            )
        if key.tokens_per_minute is not None:
            specs.append(
                _rate(tenant, "api_key.tokens_per_minute", scope, Unit.TOKENS, key.tokens_per_minute)
            )
    path = ctx.endpoint
    endpoint = config.endpoint_limit(path) if path else None
    if endpoint is None and path and config.endpoint_limits:
        check_unlimited_path(path)
    if endpoint is not None and path:
        check_endpoint(path)
        scope = f"endpoint:{path}"
        rpm, tpm = endpoint.requests_per_minute, endpoint.tokens_per_minute
        if rpm is not None:
            burst = max(1, rpm if endpoint.burst_capacity is None else endpoint.burst_capacity)
            specs.append(_rate(tenant, "endpoint.requests_per_minute", scope, Unit.REQUESTS, rpm, burst))
        if tpm is not None:
            specs.append(_rate(tenant, "endpoint.tokens_per_minute", scope, Unit.TOKENS, tpm))
    limit = config.model_limit(model) if model is not None else None
    if limit is not None and model is not None:
        check_model(model)
        scope, prefix = f"model:{model}", f"model[{model}]"
        if limit.requests_per_minute is not None:
            rpm = limit.requests_per_minute
            specs.append(_rate(tenant, f"{prefix}.requests_per_minute", scope, Unit.REQUESTS, rpm))
        if limit.tokens_per_minute is not None:
            tpm = limit.tokens_per_minute
            specs.append(_rate(tenant, f"{prefix}.tokens_per_minute", scope, Unit.TOKENS, tpm))
        if limit.tokens_per_day is not None:
            specs.append(
                _spec(
                    tenant,
                    f"budget:tokens:day:{scope}",
                    name=f"{prefix}.tokens_per_day",
                    unit=Unit.TOKENS,
                    kind=LimitKind.DAY,
                    limit=limit.tokens_per_day,
                    period_ms=0,
                )
            )
    if config.budgets:
        specs += spend_budgets(tenant, config.budgets)
    if ctx.api_key_id is not None:
        policy = config.api_key_policy(ctx.api_key_id)
        if policy is not None and policy.budgets:
            specs += spend_budgets(tenant, policy.budgets, ctx.api_key_id)
    return specs
