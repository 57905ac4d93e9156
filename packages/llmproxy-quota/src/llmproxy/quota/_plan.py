"""Pure decisions: which limits apply, key names, script arguments, result parsing. No I/O here."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from importlib.resources import files

from llmproxy.core import RequestContext
from llmproxy.ratelimit_config import TenantRateLimitConfiguration

from ._results import InvalidQuotaRequest, LimitResult, QuotaType, Reservation

#: The one Lua script (package data): admit, check, force (increment) and settle.
SCRIPT: str = files("llmproxy.quota").joinpath("lua/quota.lua").read_text(encoding="utf-8")

MINUTE_MS = 60_000
_KIND_WINDOW = {"g": "minute", "d": "day", "m": "month"}
_QUOTA_SHAPE: dict[QuotaType, tuple[str, str]] = {
    QuotaType.REQUESTS_PER_MINUTE: ("requests", "g"),
    QuotaType.TOKENS_PER_MINUTE: ("tokens", "g"),
    QuotaType.REQUESTS_PER_DAY: ("requests", "d"),
    QuotaType.TOKENS_PER_DAY: ("tokens", "d"),
    QuotaType.REQUESTS_PER_MONTH: ("requests", "m"),
    QuotaType.TOKENS_PER_MONTH: ("tokens", "m"),
}


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One limit as the script sees it. ``kind``: "g" GCRA rate, "d" UTC day budget, "m" UTC month budget."""

    name: str
    unit: str
    kind: str
    key: str
    limit: int
    burst: int = 0
    period_ms: int = MINUTE_MS
    window_end: int = 0  # settle only: the budget window the reserved cost was counted in

    def encoded(self) -> str:
        return f"{self.kind} {self.unit[0]} {self.limit} {self.burst} {self.period_ms} {self.window_end};"

    def scaled(self, processes: int) -> LimitSpec:
        """This limit divided among ``processes`` (the ``local`` failure policy)."""
        if processes <= 1 or self.limit == 0:
            return self
        return replace(self, limit=max(1, self.limit // processes), burst=max(1, self.burst // processes))


@dataclass(frozen=True, slots=True)
class Plan:
    """One script call: mode, the limits, the cost of each request limit and of each token limit."""

    mode: str
    tenant_id: str
    specs: tuple[LimitSpec, ...]
    encoded: str
    request_cost: int
    token_cost: int
    reservation_key: str | None = None
    reservation_id: str | None = None
    lease_ms: int = 0
    estimate: int = 0

    def keys(self) -> list[str]:
        keys = [s.key for s in self.specs]
        return [self.reservation_key, *keys] if self.reservation_key else keys

    def args(self, now_ms: int | None) -> list[str | int]:
        return [
            self.mode,
            "" if now_ms is None else now_ms,
            1 if self.reservation_key else 0,
            self.lease_ms,
            self.encoded,
            self.request_cost,
            self.token_cost,
        ]

    def cost(self, spec: LimitSpec) -> int:
        return self.request_cost if spec.unit == "requests" else self.token_cost

    def scaled(self, processes: int) -> Plan:
        specs = tuple(s.scaled(processes) for s in self.specs)
        return replace(self, specs=specs, encoded=encode(specs))


def encode(specs: Sequence[LimitSpec]) -> str:
    return "".join(s.encoded() for s in specs)


# -- validation ----------------------------------------------------------------------------------------------


def tenant_key(tenant_id: object) -> tuple[str, uuid.UUID]:
    """The canonical string and UUID of a tenant id (``str`` or ``UUID``), or a clear error."""
    if isinstance(tenant_id, uuid.UUID):
        return str(tenant_id), tenant_id
    if not isinstance(tenant_id, str):
        raise InvalidQuotaRequest(
            "tenant_id", f"must be a UUID or its string form, got {type(tenant_id).__name__}"
        )
    try:
        parsed = uuid.UUID(tenant_id)
    except ValueError:
        raise InvalidQuotaRequest("tenant_id", f"is not a UUID: {tenant_id!r}") from None
    return str(parsed), parsed


def amount(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidQuotaRequest(field, f"must be an integer, got {type(value).__name__}")
    if value < 0:
        raise InvalidQuotaRequest(field, f"must not be negative, got {value}")
    if value > 2**47:
        raise InvalidQuotaRequest(field, f"is unreasonably large: {value}")
    return value


def _check_id(field: str, value: object) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= 200:
        raise InvalidQuotaRequest(field, "must be a non-empty string of at most 200 characters")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise InvalidQuotaRequest(field, f"must not contain whitespace or control characters: {value!r}")


def quota_type(value: object) -> QuotaType:
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return QuotaType(value)
    except ValueError:
        choices = ", ".join(q.value for q in QuotaType)
        raise InvalidQuotaRequest(
            "quota_type", f"unknown quota type {value!r}; use one of {choices}"
        ) from None


def monthly_limits(values: Mapping[QuotaType | str, int] | None) -> dict[QuotaType, int]:
    out: dict[QuotaType, int] = {}
    for name, limit in (values or {}).items():
        qt = quota_type(name)
        if qt not in (QuotaType.REQUESTS_PER_MONTH, QuotaType.TOKENS_PER_MONTH):
            raise InvalidQuotaRequest("monthly_limits", f"{qt.value} is not a monthly quota")
        out[qt] = amount(f"monthly_limits[{qt.value}]", limit)
    return out


# -- which limits apply -------------------------------------------------------------------------------------


def _prefix(tenant: str) -> str:
    return f"llmproxy:{{{tenant}}}:quota"


def reservation_key(tenant: str, reservation_id: str) -> str:
    return f"{_prefix(tenant)}:reservation:{reservation_id}"


def _rate(tenant: str, name: str, scope: str, unit: str, limit: int, burst: int | None = None) -> LimitSpec:
    return LimitSpec(
        name=name,
        unit=unit,
        kind="g",
        key=f"{_prefix(tenant)}:rate:{scope}:{unit}",
        limit=limit,
        burst=limit if burst is None else burst,
    )


def _budget(tenant: str, unit: str, kind: str, limit: int) -> LimitSpec:
    window = _KIND_WINDOW[kind]
    return LimitSpec(
        name=f"tenant.{unit}_per_{window}",
        unit=unit,
        kind=kind,
        key=f"{_prefix(tenant)}:budget:{unit}:{window}",
        limit=limit,
    )


def tenant_limit(
    tenant: str, config: TenantRateLimitConfiguration, qt: QuotaType, monthly: Mapping[QuotaType, int]
) -> LimitSpec:
    unit, kind = _QUOTA_SHAPE[qt]
    if kind == "m":
        if qt not in monthly:
            raise InvalidQuotaRequest("quota_type", f"no {qt.value} limit is configured on this client")
        return _budget(tenant, unit, "m", monthly[qt])
    limit = int(getattr(config.global_limit, qt.value))
    if kind == "g":
        return _rate(tenant, f"tenant.{qt.value}", "tenant", unit, limit)
    return _budget(tenant, unit, kind, limit)


def request_limits(
    tenant: str, config: TenantRateLimitConfiguration, ctx: RequestContext, monthly: Mapping[QuotaType, int]
) -> list[LimitSpec]:
    """Every limit that applies to a request: tenant rates and budgets, its API key's, its endpoint's."""
    specs = [
        tenant_limit(tenant, config, qt, monthly)
        for qt in QuotaType
        if _QUOTA_SHAPE[qt][1] != "m" or qt in monthly
    ]
    if ctx.api_key_id is not None:
        _check_id("api_key_id", ctx.api_key_id)
        key = config.api_key_limit
        scope = f"key:{ctx.api_key_id}"
        specs.append(_rate(tenant, "api_key.requests_per_minute", scope, "requests", key.requests_per_minute))
        specs.append(_rate(tenant, "api_key.tokens_per_minute", scope, "tokens", key.tokens_per_minute))
    endpoint = config.endpoint_limit(ctx.endpoint) if ctx.endpoint else None
    if endpoint is not None:
        scope = f"endpoint:{ctx.endpoint}"
        rpm, burst = endpoint.requests_per_minute, max(1, endpoint.burst_capacity)
        specs.append(_rate(tenant, "endpoint.requests_per_minute", scope, "requests", rpm, burst))
        specs.append(_rate(tenant, "endpoint.tokens_per_minute", scope, "tokens", endpoint.tokens_per_minute))
    return specs


# -- plans --------------------------------------------------------------------------------------------------


def admit_plan(tenant: str, specs: Sequence[LimitSpec], encoded: str, estimate: int, lease_ms: int) -> Plan:
    """Requests cost 1; tokens cost the estimate and are held under a reservation settled later."""
    rid = uuid.uuid4().hex if any(s.unit == "tokens" for s in specs) else None
    return Plan(
        mode="admit",
        tenant_id=tenant,
        specs=tuple(specs),
        encoded=encoded,
        request_cost=1,
        token_cost=estimate,
        reservation_key=reservation_key(tenant, rid) if rid else None,
        reservation_id=rid,
        lease_ms=lease_ms,
        estimate=estimate,
    )


def single_plan(mode: str, tenant: str, spec: LimitSpec, cost: int) -> Plan:
    return Plan(
        mode=mode, tenant_id=tenant, specs=(spec,), encoded=spec.encoded(), request_cost=cost, token_cost=cost
    )


def make_reservation(plan: Plan, results: Sequence[LimitResult], local: bool) -> Reservation | None:
    if plan.reservation_id is None or plan.reservation_key is None:
        return None
    held = tuple(
        s if s.kind == "g" else replace(s, window_end=round(r.reset_at * 1000))
        for s, r in zip(plan.specs, results, strict=True)
        if s.unit == "tokens"
    )
    return Reservation(
        id=plan.reservation_id,
        tenant_id=plan.tenant_id,
        key=plan.reservation_key,
        estimate=plan.estimate,
        limits=held,
        local=local,
    )


def settle_plan(reservation: Reservation, actual: int) -> Plan:
    specs: tuple[LimitSpec, ...] = tuple(reservation.limits)
    return Plan(
        mode="settle",
        tenant_id=reservation.tenant_id,
        specs=specs,
        encoded=encode(specs),
        request_cost=0,
        token_cost=actual - reservation.estimate,
        reservation_key=reservation.key,
        reservation_id=reservation.id,
        estimate=reservation.estimate,
    )


# -- results ------------------------------------------------------------------------------------------------


def parse(plan: Plan, raw: bytes | str) -> tuple[bool, int, tuple[LimitResult, ...]]:
    """``(all allowed, server time ms, per-limit results)`` from the script's reply."""
    values = [int(v) for v in raw.split()]
    ok, now_ms = values[0] == 1, values[1]
    results = []
    if len(values) > 2:
        for i, spec in enumerate(plan.specs):
            usage, reset_in, retry = values[2 + 3 * i : 5 + 3 * i]
            capacity = 0 if spec.limit <= 0 else (spec.burst if spec.kind == "g" else spec.limit)
            results.append(
                LimitResult(
                    name=spec.name,
                    unit=spec.unit,
                    window=_KIND_WINDOW[spec.kind],
                    allowed=retry == 0,
                    limit=spec.limit,
                    remaining=max(0, capacity - usage),
                    reset_at=(now_ms + reset_in) / 1000,
                    retry_after=None if retry < 0 else retry / 1000,
                    usage=usage,
                )
            )
    return ok, now_ms, tuple(results)
