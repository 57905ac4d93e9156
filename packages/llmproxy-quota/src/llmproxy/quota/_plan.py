"""Script calls as data: a :class:`Plan` per call, its encoding, the script's reply parsed (pure, no I/O)."""

from __future__ import annotations

import enum
import itertools
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from llmproxy.core import PackedCommand, Script

from ._limits import LimitSpec, Unit, encode_field, state_key
from ._results import LimitResult, Reservation

#: The one Lua script (package data): admit, check, force (increment) and settle.
SCRIPT = Script(files("llmproxy.quota").joinpath("lua/quota.lua").read_text(encoding="utf-8"))

#: the script's header: mode, number of limits, lease, request cost, token cost, spend cost, now (quota.lua)
_HEADER = struct.Struct(">BBqqqqq")
_END = struct.Struct(">q")
_ZERO_END = _END.pack(0)
_NO_FIELD = encode_field("")
_REPLIES: dict[int, struct.Struct] = {}
#: the RESP of every call up to its key (EVALSHA, the script's SHA, one key, one argument)
_EVALSHA_HEAD = SCRIPT.head(1, 1)


class Mode(enum.IntEnum):
    """What a script call does (the values are the script's codes)."""

    ADMIT = 1  # all-or-nothing: consume every limit or none; hold the reservation (if any)
    CHECK = 2  # a dry run: evaluate, write nothing
    FORCE = 3  # consume every limit unconditionally (increment)
    SETTLE = 4  # delete the reservation; if it was still held, charge or refund the difference


@dataclass(slots=True, kw_only=True, eq=False)
class Plan:
    """One script call: its mode, its limits and the cost of each request limit and of each token limit.

    (Not frozen: one is built per request, and a frozen dataclass costs microseconds more to build.)"""

    mode: Mode
    tenant_id: str
    specs: tuple[LimitSpec, ...]
    encoded: bytes  # the limits' part of the script's argument (see encode)
    request_cost: int
    token_cost: int
    state_key: bytes  # encoded once: redis-py encodes str arguments on every call
    reservation_id: str | None = None
    lease_ms: int = 0
    estimate: int = 0
    held: tuple[int, ...] = ()  # the positions of the token limits and spend budgets a reservation holds
    ends: Sequence[int] | None = None  # settle: each limit's window end (see encode)
    spend_cost: int = 0  # of each spend budget (micro-units); signed when settling
    price: Any = None  # admit under spend budgets: the model's price, kept by the reservation
    api_key_id: str | None = None  # admit under spend budgets: the key, kept by the reservation

    def argument(self, now_ms: int | None) -> bytes:
        """The script's ARGV[1]: the header, the reservation's field, the limits (quota.lua)."""
        rid = self.reservation_id
        return (
            _HEADER.pack(
                self.mode,
                len(self.specs),
                self.lease_ms,
                self.request_cost,
                self.token_cost,
                self.spend_cost,
                -1 if now_ms is None else now_ms,
            )
            + (_NO_FIELD if rid is None else encode_field(reservation_field(rid)))
            + self.encoded
        )

    def command(self, now_ms: int | None) -> list[object]:
        """``EVALSHA`` of the script with the tenant's key and :meth:`argument`, its RESP encoded here (a
        :class:`~llmproxy.core.PackedCommand`: redis-py's packing of these five arguments costs ~4x more)."""
        key, argument = self.state_key, self.argument(now_ms)
        return PackedCommand(
            ["EVALSHA", SCRIPT.sha, 1, key, argument],
            b"%b$%d\r\n%b\r\n$%d\r\n%b\r\n" % (_EVALSHA_HEAD, len(key), key, len(argument), argument),
        )

    def cost(self, spec: LimitSpec) -> int:
        unit = spec.unit
        if unit is Unit.REQUESTS:
            return self.request_cost
        return self.token_cost if unit is Unit.TOKENS else self.spend_cost

    def scaled(self, processes: int) -> Plan:
        """This call with every limit divided among ``processes`` (the ``local`` failure policy)."""
        specs = tuple(s.scaled(processes) for s in self.specs)
        return Plan(
            mode=self.mode,
            tenant_id=self.tenant_id,
            specs=specs,
            encoded=encode(specs, self.ends),
            request_cost=self.request_cost,
            token_cost=self.token_cost,
            state_key=self.state_key,
            reservation_id=self.reservation_id,
            lease_ms=self.lease_ms,
            estimate=self.estimate,
            held=self.held,
            ends=self.ends,
            spend_cost=self.spend_cost,
        )


def reservation_field(reservation_id: str) -> str:
    """An unsettled reservation's field in its tenant's state hash."""
    return "reservation:" + reservation_id


def encode(specs: Sequence[LimitSpec], ends: Sequence[int] | None = None) -> bytes:
    """The limits' part of the script's argument: each one's field, then each one's figures. ``ends`` (settle
    only), per limit: a budget's window the reserved cost was counted in; a rate's point where the
    reservation's charge ended on the field's timeline (its TAT right after the admit)."""
    fields = b"".join([s.encoded_field for s in specs])
    if ends is None:
        return fields + b"".join([s.encoded_head + _ZERO_END for s in specs])
    return fields + b"".join([s.encoded_head + _END.pack(end) for s, end in zip(specs, ends, strict=True)])


# -- plans --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdmitShape:
    """What every admit of one (tenant, API key, endpoint) under one configuration sends, computed once."""

    config: object  # the configuration it was built from (compared by identity)
    tenant: str
    specs: tuple[LimitSpec, ...]
    encoded: bytes
    state_key: bytes
    reserves: bool  # a token limit or a spend budget applies: admits hold a reservation
    held: tuple[int, ...]  # the positions of the token limits and spend budgets
    spends: bool  # a spend budget applies: admits estimate the request's cost

    @classmethod
    def build(cls, config: object, tenant: str, specs: Sequence[LimitSpec]) -> AdmitShape:
        specs = tuple(specs)
        held = tuple(i for i, s in enumerate(specs) if s.unit is not Unit.REQUESTS)
        return cls(
            config=config,
            tenant=tenant,
            specs=specs,
            encoded=encode(specs),
            state_key=state_key(tenant).encode(),
            reserves=bool(held),
            held=held,
            spends=any(s.unit is Unit.SPEND for s in specs),
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


_ADMIT = Mode.ADMIT  # (an enum member read through its class costs ~1k instructions: read once, here)
_new_plan = object.__new__


def admit_plan(shape: AdmitShape, estimate: int, lease_ms: int, spend: int = 0) -> Plan:
    """Requests cost 1; tokens cost the estimate, spend budgets the estimated cost (``spend``), both held
    under a reservation settled later.

    (Built field by field, not through the keyword-only constructor: its eleven keywords cost an admit ~5k
    instructions more, measured with callgrind, on a path of ~160k.)"""
    plan: Plan = _new_plan(Plan)
    plan.mode = _ADMIT
    plan.tenant_id = shape.tenant
    plan.specs = shape.specs
    plan.encoded = shape.encoded
    plan.request_cost = 1
    plan.token_cost = estimate
    plan.state_key = shape.state_key
    plan.reservation_id = _IDS.next() if shape.reserves else None
    plan.lease_ms = lease_ms
    plan.estimate = estimate
    plan.held = shape.held
    plan.ends = None
    plan.spend_cost = spend
    plan.price = None
    plan.api_key_id = None
    return plan


def single_plan(mode: Mode, tenant: str, spec: LimitSpec, cost: int) -> Plan:
    """``check`` (:attr:`Mode.CHECK`) or ``increment`` (:attr:`Mode.FORCE`) of one tenant-wide limit."""
    return Plan(
        mode=mode,
        tenant_id=tenant,
        specs=(spec,),
        encoded=encode((spec,)),
        request_cost=cost,
        token_cost=cost,
        state_key=state_key(tenant).encode(),
    )


def multi_plan(mode: Mode, tenant: str, specs: Sequence[LimitSpec]) -> Plan:
    """A call over several limits at no cost (``check`` of a tenant's spend budgets)."""
    specs = tuple(specs)
    return Plan(
        mode=mode,
        tenant_id=tenant,
        specs=specs,
        encoded=encode(specs),
        request_cost=0,
        token_cost=0,
        state_key=state_key(tenant).encode(),
    )


def settle_plan(reservation: Reservation, actual: int, actual_cost: int | None = None) -> Plan:
    """Charge (or refund) the difference between the actual and the estimated tokens and cost (None: the
    estimated cost stands)."""
    specs = reservation.limits
    spend = 0 if actual_cost is None else actual_cost - reservation.estimate_cost
    return Plan(
        mode=Mode.SETTLE,
        tenant_id=reservation.tenant_id,
        specs=specs,
        encoded=encode(specs, reservation.ends),
        request_cost=0,
        token_cost=actual - reservation.estimate,
        state_key=state_key(reservation.tenant_id).encode(),
        reservation_id=reservation.id,
        estimate=reservation.estimate,
        ends=reservation.ends,
        spend_cost=spend,
    )


def make_reservation(plan: Plan, now_ms: int, values: Sequence[int], local: bool) -> Reservation | None:
    rid = plan.reservation_id
    if rid is None:
        return None
    # where each token limit's charge ends: a budget's window end, a rate's TAT after this admit (now + its
    # reset_in). (The specs are shared, not copied: settle builds the ones carrying the ends, off admit's
    # path.)
    held = plan.held
    count = len(held)
    if count == 1:
        specs: tuple[LimitSpec, ...] = (plan.specs[held[0]],)
        ends: tuple[int, ...] = (now_ms + values[3 + 3 * held[0]],)
    elif count == 2:  # tokens and a spend budget, say (the comprehensions below are a frame each)
        a, b = held
        specs = (plan.specs[a], plan.specs[b])
        ends = (now_ms + values[3 + 3 * a], now_ms + values[3 + 3 * b])
    elif count == 3:  # tenant and model tokens and a spend budget, say
        a, b, c = held
        all_specs = plan.specs
        specs = (all_specs[a], all_specs[b], all_specs[c])
        ends = (now_ms + values[3 + 3 * a], now_ms + values[3 + 3 * b], now_ms + values[3 + 3 * c])
    else:
        specs = tuple([plan.specs[i] for i in held])
        ends = tuple([now_ms + values[3 + 3 * i] for i in held])
    return Reservation(
        rid,
        plan.tenant_id,
        reservation_field(rid),
        plan.estimate,
        specs,
        local,
        ends,
        plan.spend_cost,
        plan.price,
        plan.api_key_id,
    )


# -- results ------------------------------------------------------------------------------------------------


def values(raw: bytes) -> tuple[int, ...]:
    """The script's reply: big-endian 64-bit integers (read with one ``struct`` call)."""
    n = len(raw) >> 3
    reply = _REPLIES.get(n)
    if reply is None:
        reply = _REPLIES[n] = struct.Struct(f">{n}q")
    return reply.unpack(raw)


def alerted(plan: Plan, figures: Sequence[int]) -> list[int]:
    """The positions of the spend budgets whose soft threshold the call reached (the reply's last integer)."""
    bits = figures[2 + 3 * len(plan.specs)] if len(figures) > 2 + 3 * len(plan.specs) else 0
    return [i for i in range(len(plan.specs)) if bits >> i & 1] if bits else []


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
                    left if (left := spec.capacity - usage) > 0 else 0,  # (max() is a call)
                    (now_ms + reset_in) / 1000,
                    None if retry < 0 else retry / 1000,
                    usage,
                ),
            )
        )
    return figures[0] == 1, now_ms, tuple(results), figures


_new_tuple = tuple.__new__
