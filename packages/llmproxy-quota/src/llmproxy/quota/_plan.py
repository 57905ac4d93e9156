"""Pure decisions: which limits apply, key names, script arguments, result parsing. No I/O here."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from importlib.resources import files

from llmproxy.core import RequestContext
from llmproxy.ratelimit_config import TenantRateLimitConfiguration

from ._results import InvalidQuotaRequest, LimitResult, QuotaType, Reservation

#: The one Lua script (package data): admit, check, force (increment) and settle.
SCRIPT: str = files("llmproxy.quota").joinpath("lua/quota.lua").read_text(encoding="utf-8")
SCRIPT_SHA: bytes = hashlib.sha1(SCRIPT.encode()).hexdigest().encode()  # Redis names scripts by their SHA-1

MINUTE_MS = 60_000
_KIND_WINDOW = {"g": "minute", "d": "day", "m": "month"}
_KIND_CODE = {"g": 0, "d": 1, "m": 2}
_MODE_CODE = {"admit": 1, "check": 2, "force": 3, "settle": 4}
#: the script's header and each limit: big-endian 64-bit integers (see quota.lua), all in one argument
_HEADER = struct.Struct(">BBqqqq")
_SPEC_HEAD = struct.Struct(">BBqqq")  # then the window end (the field goes in the fields' section)
_END = struct.Struct(">q")
_FIELD_LENGTH = struct.Struct(">H")
#: limits above this are sent as this (the script's doubles are exact below 2^53; no cost can come near it)
_EXACT = 2**53
_REPLIES: dict[int, struct.Struct] = {}
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
    key: str  # the limit's identity: its tenant's state key and its field (the deny cache's key)
    field: str  # its field in the tenant's state hash
    limit: int
    burst: int = 0
    period_ms: int = MINUTE_MS
    # derived once, read by every reply's parsing: "minute"/"day"/"month", and what usage is measured against
    window: str = dataclasses.field(init=False, compare=False)
    capacity: int = dataclasses.field(init=False, compare=False)
    # derived once: this limit's encoding (see quota.lua): its field, and its figures before the window end
    _field: bytes = dataclasses.field(init=False, compare=False, repr=False)
    _head: bytes = dataclasses.field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", _KIND_WINDOW[self.kind])
        capacity = 0 if self.limit <= 0 else (self.burst if self.kind == "g" else self.limit)
        object.__setattr__(self, "capacity", capacity)
        unit = 0 if self.unit == "requests" else 1
        limit, burst = min(self.limit, _EXACT), min(self.burst, _EXACT)
        head = _SPEC_HEAD.pack(_KIND_CODE[self.kind], unit, limit, burst, self.period_ms)
        field = self.field.encode()
        object.__setattr__(self, "_field", _FIELD_LENGTH.pack(len(field)) + field)
        object.__setattr__(self, "_head", head)

    def scaled(self, processes: int) -> LimitSpec:
        """This limit divided among ``processes`` (the ``local`` failure policy)."""
        if processes <= 1 or self.limit == 0:
            return self
        return replace(self, limit=max(1, self.limit // processes), burst=max(1, self.burst // processes))


class Plan:
    """One script call: mode, the limits, the cost of each request limit and of each token limit.

    (A plain class: one is built per request, and a frozen dataclass costs microseconds to build.)"""

    __slots__ = (
        "encoded", "ends", "estimate", "held", "lease_ms", "mode", "request_cost", "reservation_id",
        "specs", "state_key", "tenant_id", "token_cost",
    )  # fmt: skip

    def __init__(
        self,
        mode: str,
        tenant_id: str,
        specs: tuple[LimitSpec, ...],
        encoded: bytes,
        request_cost: int,
        token_cost: int,
        state_key: bytes,
        reservation_id: str | None = None,
        lease_ms: int = 0,
        estimate: int = 0,
        held: tuple[int, ...] = (),
        ends: Sequence[int] | None = None,
    ) -> None:
        self.mode = mode
        self.tenant_id = tenant_id
        self.specs = specs
        self.encoded = encoded
        self.request_cost = request_cost
        self.token_cost = token_cost
        self.state_key = state_key
        self.reservation_id = reservation_id
        self.lease_ms = lease_ms
        self.estimate = estimate
        self.held = held  # the positions of the token limits a reservation holds
        self.ends = ends  # settle: each limit's window end (see encode)

    def keys(self) -> list[str | bytes]:
        return [self.state_key]

    def args(self, now_ms: int | None) -> list[bytes]:
        """The script's ARGV: one string, the header, the reservation's field, the limits (quota.lua)."""
        return [self.argument(now_ms)]

    def argument(self, now_ms: int | None) -> bytes:
        rid = self.reservation_id
        return (
            _HEADER.pack(
                _MODE_CODE[self.mode],
                len(self.specs),
                self.lease_ms,
                self.request_cost,
                self.token_cost,
                -1 if now_ms is None else now_ms,
            )
            + (_NO_FIELD if rid is None else _field(reservation_field(rid)))
            + self.encoded
        )

    def command(self, sha: bytes, now_ms: int | None) -> list[object]:
        """EVALSHA's arguments: the script, its key, its argument (as :meth:`keys` and :meth:`args`). Bytes
        where possible: redis-py encodes every other argument on every call."""
        return ["EVALSHA", sha, b"1", self.state_key, self.argument(now_ms)]

    def cost(self, spec: LimitSpec) -> int:
        return self.request_cost if spec.unit == "requests" else self.token_cost

    def scaled(self, processes: int) -> Plan:
        specs = tuple(s.scaled(processes) for s in self.specs)
        return Plan(
            self.mode, self.tenant_id, specs, encode(specs, self.ends), self.request_cost, self.token_cost,
            self.state_key, self.reservation_id, self.lease_ms,
            self.estimate, self.held, self.ends,
        )  # fmt: skip


_ZERO_END = _END.pack(0)
_NO_FIELD = _FIELD_LENGTH.pack(0)


def reservation_field(reservation_id: str) -> str:
    """An unsettled reservation's field in its tenant's state hash."""
    return "reservation:" + reservation_id


def _field(name: str) -> bytes:
    raw = name.encode()
    return _FIELD_LENGTH.pack(len(raw)) + raw


def encode(specs: Sequence[LimitSpec], ends: Sequence[int] | None = None) -> bytes:
    """The limits' part of the script's argument: each one's field, then each one's figures. ``ends`` (settle
    only), per limit: a budget's window the reserved cost was counted in; a rate's point where the
    reservation's charge ended on the field's timeline (its TAT right after the admit)."""
    fields = b"".join([s._field for s in specs])
    if ends is None:
        return fields + b"".join([s._head + _ZERO_END for s in specs])
    return fields + b"".join([s._head + _END.pack(end) for s, end in zip(specs, ends, strict=True)])


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


def state_key(tenant: str) -> str:
    """The tenant's state: one hash, a field per limit (see quota.lua)."""
    return f"llmproxy:{{{tenant}}}:quota"


def _spec(tenant: str, field: str, **kwargs: object) -> LimitSpec:
    return LimitSpec(key=f"{state_key(tenant)} {field}", field=field, **kwargs)  # type: ignore[arg-type]


def _rate(tenant: str, name: str, scope: str, unit: str, limit: int, burst: int | None = None) -> LimitSpec:
    return _spec(
        tenant,
        f"rate:{scope}:{unit}",
        name=name,
        unit=unit,
        kind="g",
        limit=limit,
        burst=limit if burst is None else burst,
    )


def _budget(tenant: str, unit: str, kind: str, limit: int) -> LimitSpec:
    window = _KIND_WINDOW[kind]
    name = f"tenant.{unit}_per_{window}"
    return _spec(tenant, f"budget:{unit}:{window}", name=name, unit=unit, kind=kind, limit=limit)


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
    encoded: bytes
    state_key: bytes  # encoded once: redis-py encodes str arguments on every call
    reserves: bool  # a token limit applies: admits hold a reservation
    held: tuple[int, ...]  # the positions of the token limits

    @classmethod
    def build(cls, config: object, tenant: str, specs: Sequence[LimitSpec]) -> AdmitShape:
        specs = tuple(specs)
        tokens = any(s.unit == "tokens" for s in specs)
        return cls(
            config=config,
            tenant=tenant,
            specs=specs,
            encoded=encode(specs),
            state_key=state_key(tenant).encode(),
            reserves=tokens,
            held=tuple(i for i, s in enumerate(specs) if s.unit == "tokens"),
        )


class _ReservationIds:
    """Unique reservation ids, cheaply: a random per-process prefix (renewed in a forked child) and a counter.
    (They only need to be unique; ``os.urandom`` per request is a system call.)"""

    def __init__(self) -> None:
        self.renew()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self.renew)

    def renew(self) -> None:
        self.prefix = os.urandom(12).hex()
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):x}"


_IDS = _ReservationIds()


def admit_plan(shape: AdmitShape, estimate: int, lease_ms: int) -> Plan:
    """Requests cost 1; tokens cost the estimate and are held under a reservation settled later."""
    rid = _IDS.next() if shape.reserves else None
    return Plan(
        "admit",
        shape.tenant,
        shape.specs,
        shape.encoded,
        1,
        estimate,
        shape.state_key,
        rid,
        lease_ms,
        estimate,
        shape.held,
    )


def single_plan(mode: str, tenant: str, spec: LimitSpec, cost: int) -> Plan:
    return Plan(mode, tenant, (spec,), encode((spec,)), cost, cost, state_key(tenant).encode())


def make_reservation(plan: Plan, now_ms: int, values: Sequence[int], local: bool) -> Reservation | None:
    rid = plan.reservation_id
    if rid is None:
        return None
    # where each token limit's charge ends: a budget's window end, a rate's TAT after this admit (now + its
    # reset_in). (The specs are shared, not copied: settle builds the ones carrying the ends, off admit's
    # path.)
    held = plan.held
    if len(held) == 1:
        specs: tuple[LimitSpec, ...] = (plan.specs[held[0]],)
        ends: tuple[int, ...] = (now_ms + values[3 + 3 * held[0]],)
    else:
        specs = tuple([plan.specs[i] for i in held])
        ends = tuple([now_ms + values[3 + 3 * i] for i in held])
    return Reservation(rid, plan.tenant_id, reservation_field(rid), plan.estimate, specs, local, ends)


def settle_plan(reservation: Reservation, actual: int) -> Plan:
    specs = reservation.limits
    return Plan(
        "settle",
        reservation.tenant_id,
        specs,
        encode(specs, reservation.ends),
        0,
        actual - reservation.estimate,
        state_key(reservation.tenant_id).encode(),
        reservation.id,
        0,
        reservation.estimate,
        (),
        reservation.ends,
    )


# -- results ------------------------------------------------------------------------------------------------


def values(raw: bytes) -> tuple[int, ...]:
    """The script's reply: big-endian 64-bit integers (read with one ``struct`` call)."""
    n = len(raw) >> 3
    reply = _REPLIES.get(n)
    if reply is None:
        reply = _REPLIES[n] = struct.Struct(f">{n}q")
    return reply.unpack(raw)


def parse(plan: Plan, raw: bytes) -> tuple[bool, int, tuple[LimitResult, ...], tuple[int, ...]]:
    """``(all allowed, server time ms, per-limit results, the reply's integers)`` from the script's reply."""
    figures = values(raw)
    now_ms = figures[1]
    results = []
    at = 2
    for spec in plan.specs:
        usage, reset_in, retry = figures[at], figures[at + 1], figures[at + 2]
        at += 3
        # LimitResult(name, unit, window, allowed, limit, remaining, reset_at, retry_after, usage), built as
        # the tuple it is (a NamedTuple's __new__ is one more Python call per limit)
        results.append(
            _new_tuple(
                LimitResult,
                (
                    spec.name,
                    spec.unit,
                    spec.window,
                    retry == 0,
                    spec.limit,
                    max(0, spec.capacity - usage),
                    (now_ms + reset_in) / 1000,
                    None if retry < 0 else retry / 1000,
                    usage,
                ),
            )
        )
    return figures[0] == 1, now_ms, tuple(results), figures


_new_tuple = tuple.__new__
