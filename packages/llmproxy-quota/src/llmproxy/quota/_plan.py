"""Pure decisions: which limits apply, key names, script arguments, result parsing. No I/O here."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
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
    # settle only: a budget ("d"/"m"): the window the reserved cost was counted in; a rate ("g"): where the
    # reservation's charge ended on the key's timeline (its TAT right after the admit, ms, rounded up)
    window_end: int = 0
    # derived once, read by every reply's parsing: "minute"/"day"/"month", and what usage is measured against
    window: str = field(init=False, compare=False)
    capacity: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", _KIND_WINDOW[self.kind])
        capacity = 0 if self.limit <= 0 else (self.burst if self.kind == "g" else self.limit)
        object.__setattr__(self, "capacity", capacity)

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

    spec_keys: tuple[str | bytes, ...] | None = None  # the keys of ``specs``, when already known (encoded)

    def keys(self) -> list[str | bytes]:
        keys = self.spec_keys if self.spec_keys is not None else tuple(s.key for s in self.specs)
        return [self.reservation_key, *keys] if self.reservation_key else list(keys)

    def args(self, now_ms: int | None) -> list[str | int]:
        """The script's ARGV: one header (see quota.lua) and the limits."""
        resv = 1 if self.reservation_key else 0
        now = "" if now_ms is None else now_ms
        return [
            f"{self.mode} {resv} {self.lease_ms} {self.request_cost} {self.token_cost} {now}",
            self.encoded,
        ]

    def cost(self, spec: LimitSpec) -> int:
        return self.request_cost if spec.unit == "requests" else self.token_cost

    def scaled(self, processes: int) -> Plan:
        specs = tuple(s.scaled(processes) for s in self.specs)
        return replace(self, specs=specs, encoded=encode(specs), spec_keys=None)


def encode(specs: Sequence[LimitSpec]) -> str:
    return "".join(s.encoded() for s in specs)


# -- validation ----------------------------------------------------------------------------------------------


_TENANT_KEYS: dict[str, tuple[str, uuid.UUID]] = {}  # parsed tenant ids: parsing a UUID costs microseconds


def tenant_key(tenant_id: object) -> tuple[str, uuid.UUID]:
    """The canonical string and UUID of a tenant id (``str`` or ``UUID``), or a clear error."""
    if type(tenant_id) is str:
        known = _TENANT_KEYS.get(tenant_id)
        if known is not None:
            return known
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
    if len(_TENANT_KEYS) >= 10_000:
        _TENANT_KEYS.clear()
    known = _TENANT_KEYS[tenant_id] = (str(parsed), parsed)
    return known


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
    configured = getattr(config.global_limit, qt.value, None)
    if configured is None:
        raise InvalidQuotaRequest("quota_type", f"no {qt.value} limit is configured for this tenant")
    limit = int(configured)
    if kind == "g":
        return _rate(tenant, f"tenant.{qt.value}", "tenant", unit, limit)
    return _budget(tenant, unit, kind, limit)


def request_limits(
    tenant: str, config: TenantRateLimitConfiguration, ctx: RequestContext, monthly: Mapping[QuotaType, int]
) -> list[LimitSpec]:
    """Every limit that applies to a request: tenant rates and budgets, its API key's, its endpoint's.

    A limit whose value is None (possible in a custom limits source, e.g. built with ``model_construct``) is
    not configured and not evaluated; 0 still means "nothing allowed"."""
    specs = [
        tenant_limit(tenant, config, qt, monthly)
        for qt in QuotaType
        if (
            qt in monthly
            if _QUOTA_SHAPE[qt][1] == "m"
            else getattr(config.global_limit, qt.value, None) is not None
        )
    ]
    if ctx.api_key_id is not None:
        _check_id("api_key_id", ctx.api_key_id)
        key = config.api_key_limit
        scope = f"key:{ctx.api_key_id}"
        if key.requests_per_minute is not None:
            specs.append(
                _rate(tenant, "api_key.requests_per_minute", scope, "requests", key.requests_per_minute)
            )
        if key.tokens_per_minute is not None:
            specs.append(_rate(tenant, "api_key.tokens_per_minute", scope, "tokens", key.tokens_per_minute))
    endpoint = config.endpoint_limit(ctx.endpoint) if ctx.endpoint else None
    if endpoint is not None:
        scope = f"endpoint:{ctx.endpoint}"
        rpm, tpm = endpoint.requests_per_minute, endpoint.tokens_per_minute
        if rpm is not None:
            burst = max(1, rpm if endpoint.burst_capacity is None else endpoint.burst_capacity)
            specs.append(_rate(tenant, "endpoint.requests_per_minute", scope, "requests", rpm, burst))
        if tpm is not None:
            specs.append(_rate(tenant, "endpoint.tokens_per_minute", scope, "tokens", tpm))
    return specs


# -- plans --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdmitShape:
    """What every admit of one (tenant, API key, endpoint) under one configuration sends, computed once."""

    config: object  # the configuration it was built from (compared by identity)
    tenant: str
    specs: tuple[LimitSpec, ...]
    encoded: str
    keys: tuple[bytes, ...]  # encoded once: redis-py encodes str arguments on every call
    reservation_prefix: str | None  # set when a token limit applies: admits hold a reservation

    @classmethod
    def build(cls, config: object, tenant: str, specs: Sequence[LimitSpec]) -> AdmitShape:
        specs = tuple(specs)
        tokens = any(s.unit == "tokens" for s in specs)
        return cls(
            config=config,
            tenant=tenant,
            specs=specs,
            encoded=encode(specs),
            keys=tuple(s.key.encode() for s in specs),
            reservation_prefix=reservation_key(tenant, "") if tokens else None,
        )


def admit_plan(shape: AdmitShape, estimate: int, lease_ms: int) -> Plan:
    """Requests cost 1; tokens cost the estimate and are held under a reservation settled later."""
    rid = os.urandom(16).hex() if shape.reservation_prefix is not None else None
    return Plan(
        "admit",
        shape.tenant,
        shape.specs,
        shape.encoded,
        1,
        estimate,
        None if rid is None else shape.reservation_prefix + rid,  # type: ignore[operator]
        rid,
        lease_ms,
        estimate,
        shape.keys,
    )


def single_plan(mode: str, tenant: str, spec: LimitSpec, cost: int) -> Plan:
    return Plan(
        mode=mode, tenant_id=tenant, specs=(spec,), encoded=spec.encoded(), request_cost=cost, token_cost=cost
    )


def make_reservation(plan: Plan, results: Sequence[LimitResult], local: bool) -> Reservation | None:
    if plan.reservation_id is None or plan.reservation_key is None:
        return None
    # a budget's reset_at is its window end; a rate's is the key's TAT after this admit: where its charge
    # ends. (The specs are shared, not copied: settle builds the ones carrying the ends, off admit's path.)
    held = [
        (s, round(r.reset_at * 1000)) for s, r in zip(plan.specs, results, strict=True) if s.unit == "tokens"
    ]
    return Reservation(
        id=plan.reservation_id,
        tenant_id=plan.tenant_id,
        key=plan.reservation_key,
        estimate=plan.estimate,
        limits=tuple(s for s, _ in held),
        local=local,
        ends=tuple(end for _, end in held),
    )


def settle_plan(reservation: Reservation, actual: int) -> Plan:
    specs = tuple(
        LimitSpec(s.name, s.unit, s.kind, s.key, s.limit, s.burst, s.period_ms, end)
        for s, end in zip(reservation.limits, reservation.ends, strict=True)
    )
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
    """``(all allowed, server time ms, per-limit results)`` from the script's reply.

    (One string: formatting it costs the script ~2 us, while redis-py's pure-Python parser takes ~12 us more
    to read the same figures as an array of integers.)"""
    values = [int(v) for v in raw.split()]
    now_ms = values[1]
    if len(values) <= 2:
        return values[0] == 1, now_ms, ()
    figures = iter(values[2:])
    results = tuple(
        # positional: LimitResult(name, unit, window, allowed, limit, remaining, reset_at, retry_after, usage)
        LimitResult(
            spec.name,
            spec.unit,
            spec.window,
            retry == 0,
            spec.limit,
            max(0, spec.capacity - usage),
            (now_ms + reset_in) / 1000,
            None if retry < 0 else retry / 1000,
            usage,
        )
        for spec, usage, reset_in, retry in zip(plan.specs, figures, figures, figures, strict=False)
    )
    return values[0] == 1, now_ms, results
