"""Property tests: the Lua engine against a pure reference model (exact rational arithmetic).

For any sequence of admits, settles and clock moves: the engine decides exactly as the model, never admits
more requests than a budget holds in a UTC day nor more than burst + elapsed x rate, never lets the requests
admitted within any span use more tokens than burst + elapsed x rate (refunds included), and a rejected
request changes no stored state at all.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llmproxy.core import ManualClock, RequestContext, redis_from_url
from llmproxy.quota import QuotaClient, StaticLimits
from llmproxy.ratelimit_config import (
    ApiKeyLimit,
    EndpointLimit,
    GlobalLimit,
    TenantRateLimitConfiguration,
)

DAY_MS = 86_400_000
MINUTE_MS = 60_000
START_MS = 1_775_001_540_000 - 5 * MINUTE_MS  # five minutes before a UTC midnight
CHAT = "/v1/chat/completions"


@dataclass
class Rate:
    """GCRA as specified: TAT advances cost x 60 s / limit; admit while TAT - now <= burst x 60 s / limit."""

    limit: int
    burst: int
    tat: Fraction = Fraction(0)

    def fits(self, now: int, cost: int) -> bool:
        # a zero cost still waits while an over-charge (settled above the estimate) is being paid back
        if self.limit == 0:
            return cost == 0
        new = max(self.tat, Fraction(now)) + Fraction(cost * MINUTE_MS, self.limit)
        return new - now <= Fraction(self.burst * MINUTE_MS, self.limit)

    def charge(self, now: int, cost: int) -> None:
        if self.limit:
            self.tat = max(
                Fraction(now), max(self.tat, Fraction(now)) + Fraction(cost * MINUTE_MS, self.limit)
            )

    def charge_end(self) -> int:
        """Where the last charge ended on this key's timeline: its TAT, rounded up to the ms."""
        return math.ceil(self.tat)

    def refund(self, now: int, tokens: int, end: int) -> None:
        """Return at most the part of a reservation's charge (ending at ``end``) not drained by ``now``: what
        drained was replaced by other requests' charges. Never below full capacity."""
        if self.limit:
            back = min(Fraction(tokens * MINUTE_MS, self.limit), Fraction(max(0, end - now)))
            self.tat = max(Fraction(now), max(self.tat, Fraction(now)) - back)


@dataclass
class Budget:
    limit: int
    used: dict[int, int] = field(default_factory=dict)

    def fits(self, now: int, cost: int) -> bool:
        return self.used.get(now // DAY_MS, 0) + cost <= self.limit

    def charge(self, now: int, cost: int, window: int | None = None) -> None:
        day = now // DAY_MS
        if cost < 0 and window != day:
            return
        self.used[day] = max(0, self.used.get(day, 0) + cost)


@dataclass
class Model:
    rates: dict[str, tuple[Rate, str]]
    budgets: dict[str, tuple[Budget, str]]

    def admit(self, now: int, estimate: int) -> dict[str, int] | None:
        """None when rejected, else where the charge of each token rate ended (the reservation holds it)."""

        def cost(unit: str) -> int:
            return 1 if unit == "requests" else estimate

        ok = all(r.fits(now, cost(u)) for r, u in self.rates.values()) and all(
            b.fits(now, cost(u)) for b, u in self.budgets.values()
        )
        if not ok:
            return None
        for r, u in self.rates.values():
            r.charge(now, cost(u))
        for b, u in self.budgets.values():
            b.charge(now, cost(u))
        return {name: r.charge_end() for name, (r, u) in self.rates.items() if u == "tokens"}

    def settle(self, now: int, delta: int, window: int, ends: dict[str, int]) -> None:
        for name, (r, u) in self.rates.items():
            if u == "tokens":
                if delta >= 0:
                    r.charge(now, delta)
                else:
                    r.refund(now, -delta, ends[name])
        for b, u in self.budgets.values():
            if u == "tokens":
                b.charge(now, delta, window)


limits_st = st.fixed_dictionaries(
    {
        "rpm": st.integers(0, 12),
        "rpd": st.integers(0, 30),
        "tpm": st.integers(0, 400),
        "tpd": st.integers(0, 2000),
        "ep_rpm": st.integers(1, 12),
        "ep_burst": st.integers(0, 6),
    }
)
step_st = st.one_of(
    st.tuples(st.just("advance"), st.integers(0, 90_000)),
    st.tuples(st.just("admit"), st.integers(0, 150)),
    st.tuples(st.just("settle"), st.integers(0, 30), st.integers(0, 300)),
)


def _state(redis: Any, key: str) -> tuple[dict[bytes, bytes], bool]:
    """The tenant's whole stored state: every field of its hash, and whether the hash has a TTL."""
    return redis.hgetall(key), redis.pttl(key) > 0


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limits=limits_st, steps=st.lists(step_st, min_size=1, max_size=40))
@example(  # a refund after the reservation's charge drained must not erase the next request's charge
    limits={"rpm": 12, "rpd": 30, "tpm": 100, "tpd": 2000, "ep_rpm": 12, "ep_burst": 6},
    steps=[
        ("admit", 100),
        ("advance", 60_000),
        ("admit", 100),
        ("settle", 1, 100),
        ("settle", 0, 0),
        ("admit", 100),
    ],
)
def test_engine_matches_the_reference_model_and_never_over_admits(
    redis_url: str, limits: dict[str, int], steps: list[tuple[Any, ...]]
) -> None:
    tenant = uuid.uuid4()
    config = TenantRateLimitConfiguration(
        tenant_id=tenant,
        global_limit=GlobalLimit(
            requests_per_minute=limits["rpm"],
            requests_per_day=limits["rpd"],
            tokens_per_minute=limits["tpm"],
            tokens_per_day=limits["tpd"],
        ),
        api_key_limit=ApiKeyLimit(requests_per_minute=10**6, tokens_per_minute=10**6),
        endpoint_limits={
            CHAT: EndpointLimit(
                requests_per_minute=limits["ep_rpm"],
                tokens_per_minute=10**6,
                burst_capacity=limits["ep_burst"],
            )
        },
    )
    clock = ManualClock(START_MS / 1000)
    redis = redis_from_url(redis_url)
    client = QuotaClient(redis, StaticLimits({tenant: config}), clock=clock, deny_cache=False)
    model = Model(
        rates={
            "tenant.requests_per_minute": (Rate(limits["rpm"], limits["rpm"]), "requests"),
            "tenant.tokens_per_minute": (Rate(limits["tpm"], limits["tpm"]), "tokens"),
            "endpoint.requests_per_minute": (Rate(limits["ep_rpm"], max(1, limits["ep_burst"])), "requests"),
        },
        budgets={
            "tenant.requests_per_day": (Budget(limits["rpd"]), "requests"),
            "tenant.tokens_per_day": (Budget(limits["tpd"]), "tokens"),
        },
    )
    ctx = RequestContext(tenant_id=str(tenant), endpoint=CHAT)
    reservations: list[tuple[Any, int, dict[str, int]]] = []
    admitted_at: list[int] = []
    used: list[int] = []  # tokens each admitted request used: its estimate, or what it settled at if less
    state_key = f"llmproxy:{{{tenant}}}:quota"  # the tenant's state hash
    now = START_MS
    for step in steps:
        if step[0] == "advance":
            clock.advance(step[1] / 1000)
            now += step[1]
        elif step[0] == "admit":
            before = _state(redis, state_key)
            admission = client.admit(ctx, step[1])
            ends = model.admit(now, step[1])
            assert admission.allowed == (ends is not None), (step, now)
            if ends is not None:
                reservations.append((admission.reservation, step[1], ends))
                admitted_at.append(now)
                used.append(step[1])
            else:
                assert _state(redis, state_key) == before, "a rejected request changed stored state"
        elif reservations:
            index = step[1] % len(reservations)
            reservation, estimate, ends = reservations[index]
            settlement = client.settle(reservation, step[2])
            if settlement.settled:
                day_end = next(
                    end
                    for held, end in zip(reservation.limits, reservation.ends, strict=True)
                    if held.window == "day"
                )
                window = day_end // DAY_MS - 1
                model.settle(now, step[2] - estimate, window, ends)
                # usage beyond the estimate is charged after the fact (later requests wait): not bounded here
                used[index] = min(step[2], estimate)
    client.close()

    per_day: dict[int, int] = {}
    for t in admitted_at:
        per_day[t // DAY_MS] = per_day.get(t // DAY_MS, 0) + 1
    assert all(n <= limits["rpd"] for n in per_day.values())
    rate = Fraction(limits["rpm"], MINUTE_MS)
    token_rate = Fraction(limits["tpm"], MINUTE_MS)
    for i, first in enumerate(admitted_at):
        tokens = 0
        for j in range(i, len(admitted_at)):
            assert j - i + 1 <= limits["rpm"] + (admitted_at[j] - first) * rate
            tokens += used[j]
            assert tokens <= limits["tpm"] + (admitted_at[j] - first) * token_rate, (i, j, tokens)
