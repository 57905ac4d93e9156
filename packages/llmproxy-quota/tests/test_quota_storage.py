"""How quota state is stored: one hash per tenant, its TTL, pruning, the binary reply, and the embedded
backend's parity with Redis (fakeredis has no ``struct`` library: the script carries a Lua fallback)."""

from __future__ import annotations

import struct
import uuid
from typing import Any

from llmproxy.core import ManualClock, RequestContext, async_redis_from_url, redis_from_url
from llmproxy.quota import AsyncQuotaClient, QuotaClient, StaticLimits
from llmproxy.ratelimit_config import EndpointLimit

from .conftest import MONTH_END, make_config

CHAT = "/v1/chat/completions"


def state_key(tenant: uuid.UUID) -> str:
    return f"llmproxy:{{{tenant}}}:quota"


def fields(redis: Any, tenant: uuid.UUID) -> dict[str, tuple[int, ...]]:
    """The tenant's hash, decoded: every limit's two integers, and ``_expires``."""
    raw = redis.hgetall(state_key(tenant))
    return {k.decode(): struct.unpack(f">{len(v) // 8}q", v) for k, v in raw.items()}


def test_a_tenants_state_is_one_hash_with_a_field_per_limit_and_a_ttl(
    make_client: Any, tenant: uuid.UUID, redis_url: str, clock: ManualClock
) -> None:
    client = make_client()
    redis = redis_from_url(redis_url)
    admission = client.admit(RequestContext(tenant_id=str(tenant), api_key_id="k1"), 100)
    assert admission.allowed
    assert admission.reservation is not None
    assert [k.decode() for k in redis.keys(f"llmproxy:{{{tenant}}}:*")] == [state_key(tenant)]
    stored = fields(redis, tenant)
    assert admission.reservation.key == f"reservation:{admission.reservation.id}"
    assert sorted(stored) == sorted(
        [
            "_expires",
            "budget:requests:day",
            "budget:tokens:day",
            "rate:key:k1:requests",
            "rate:key:k1:tokens",
            "rate:tenant:requests",
            "rate:tenant:tokens",
            admission.reservation.key,
        ]
    )
    now_ms = int(clock.now() * 1000)
    day_end = (now_ms // 86_400_000 + 1) * 86_400_000
    assert stored["budget:tokens:day"] == (day_end, 100)
    assert stored[admission.reservation.key] == (now_ms + 3_600_000,)  # the end of its lease
    # the hash lives until the latest need (the day budget: its window end + 60 s) plus an hour's slack
    assert stored["_expires"] == (day_end + 60_000 + 3_600_000,)
    ttl = redis.pttl(state_key(tenant))
    assert day_end + 60_000 + 3_600_000 - now_ms - 5_000 < ttl <= day_end + 60_000 + 3_600_000 - now_ms


def test_fields_of_keys_no_longer_used_are_pruned_when_the_expiry_is_extended(
    make_client: Any, tenant: uuid.UUID, redis_url: str, clock: ManualClock
) -> None:
    client = make_client()
    redis = redis_from_url(redis_url)
    assert client.admit(RequestContext(tenant_id=str(tenant), api_key_id="old-key"), 10).allowed
    assert "rate:key:old-key:requests" in fields(redis, tenant)
    expires_before = fields(redis, tenant)["_expires"][0]
    clock.advance(3 * 3600)  # into the next day, past the hash's expiry as last set: a write extends it
    assert client.admit(RequestContext(tenant_id=str(tenant), api_key_id="new-key"), 10).allowed
    stored = fields(redis, tenant)
    assert stored["_expires"][0] > expires_before
    assert not any("old-key" in name for name in stored)  # dead: their TAT lies in the past
    assert "rate:key:new-key:requests" in stored
    # the day budgets were rewritten for the new day, not pruned
    assert stored["budget:requests:day"][1] == 1


def test_a_reservation_never_settled_is_pruned_after_its_lease(
    make_client: Any, tenant: uuid.UUID, redis_url: str, clock: ManualClock
) -> None:
    client = make_client(reservation_ttl=600)
    redis = redis_from_url(redis_url)
    lost = client.admit(RequestContext(tenant_id=str(tenant)), 10).reservation  # its settle never comes
    assert lost is not None
    assert lost.key in fields(redis, tenant)
    clock.advance(3 * 3600)  # past the lease and the hash's expiry as last set: the next write prunes
    kept = client.admit(RequestContext(tenant_id=str(tenant)), 10).reservation
    assert kept is not None
    stored = fields(redis, tenant)
    assert lost.key not in stored
    assert kept.key in stored
    assert not client.settle(lost, 0).settled
    assert client.settle(kept, 0).settled
    assert kept.key not in fields(redis, tenant)


def test_a_field_still_alive_survives_pruning(
    make_client: Any, limits: Any, tenant: uuid.UUID, redis_url: str, clock: ManualClock
) -> None:
    limits.configure(key_rpm=1)  # one request fills key "slow" for a minute
    client = make_client()
    redis = redis_from_url(redis_url)
    assert client.admit(RequestContext(tenant_id=str(tenant), api_key_id="slow"), 0).allowed
    redis.hset(state_key(tenant), "_expires", struct.pack(">q", 0))  # the next write extends it and prunes
    assert client.admit(RequestContext(tenant_id=str(tenant)), 0).allowed
    assert "rate:key:slow:requests" in fields(redis, tenant)  # its TAT is still ahead: kept
    assert not client.admit(RequestContext(tenant_id=str(tenant), api_key_id="slow"), 0).allowed


def test_a_client_that_decodes_responses_reads_the_binary_reply_as_bytes(
    redis_url: str, tenant: uuid.UUID
) -> None:
    client = QuotaClient(redis_from_url(redis_url, decode_responses=True), StaticLimits({}))
    admission = client.admit(RequestContext(tenant_id=str(tenant)), 40)
    assert admission.allowed
    assert client.settle(admission.reservation, 15).settled
    assert client.check(tenant, "tokens_per_day", 0).current_usage == 15
    assert client.increment(tenant, "requests_per_day", 2) == 3
    client.close()


async def test_an_async_client_that_decodes_responses_reads_the_binary_reply_as_bytes(
    redis_url: str, tenant: uuid.UUID
) -> None:
    client = AsyncQuotaClient(async_redis_from_url(redis_url, decode_responses=True), StaticLimits({}))
    admission = await client.admit(RequestContext(tenant_id=str(tenant)), 40)
    assert admission.allowed
    assert (await client.settle(admission.reservation, 15)).settled
    assert (await client.check(tenant, "tokens_per_day", 0)).current_usage == 15
    await client.aclose()


def test_the_embedded_backend_answers_and_stores_exactly_what_redis_does(real_redis_url: str) -> None:
    """Same clock, same calls on a real redis-server and on fakeredis: equal replies and equal stored bytes,
    through refunds (negative numbers), rejections, month budgets and limits near 2^53."""
    tenant = uuid.uuid4()
    endpoint = EndpointLimit(requests_per_minute=3, tokens_per_minute=900, burst_capacity=4)
    config = make_config(tenant, rpm=5, tpm=1_000, tpd=2_500, endpoints={CHAT: endpoint})
    huge = make_config(uuid.uuid4(), rpm=2**53 - 1, rpd=2**62, tpm=2**52 + 1, tpd=2**63 - 1)
    source = StaticLimits({tenant: config, huge.tenant_id: huge})
    clock = ManualClock(MONTH_END - 120)
    monthly = {"tokens_per_month": 4_000}
    clients = [
        QuotaClient(redis_from_url(url), source, clock=clock, monthly_limits=monthly, deny_cache=False)
        for url in (real_redis_url, f"memory://parity-{tenant}")
    ]
    ctx = RequestContext(tenant_id=str(tenant), api_key_id="k", endpoint=CHAT)
    big = RequestContext(tenant_id=str(huge.tenant_id), api_key_id="k")

    def view(answer: Any) -> Any:  # reservation ids differ (random per process); all else must not
        r = getattr(answer, "reservation", None)
        held = None if r is None else (r.estimate, r.limits, r.ends)
        return (answer.allowed, answer.results, held) if hasattr(answer, "results") else answer

    held: list[dict[bytes, bytes]] = [{}, {}]  # per client: reservation field -> its place in the run

    def stored(i: int, t: uuid.UUID) -> dict[bytes, bytes]:
        return {held[i].get(k, k): v for k, v in clients[i].redis.hgetall(state_key(t)).items()}

    def both(call: Any) -> Any:
        answers = [call(c) for c in clients]
        assert view(answers[0]) == view(answers[1])
        for i, answer in enumerate(answers):
            r = getattr(answer, "reservation", None)
            if r is not None:
                held[i][r.key.encode()] = f"reservation #{len(held[i])}".encode()
        for t in (tenant, huge.tenant_id):
            assert stored(0, t) == stored(1, t)
        return answers

    reservations: list[Any] = []
    for step in range(12):
        admissions = both(lambda c, step=step: c.admit(ctx, 300 + 50 * step))
        reservations.append([a.reservation for a in admissions])
        clock.advance(7.5)
        if step % 3 == 2 and reservations[-1][0] is not None:
            pair = reservations.pop()
            both(lambda c, pair=pair: c.settle(pair[clients.index(c)], 20))  # a refund: negative cost
    both(lambda c: c.increment(tenant, "tokens_per_month", 1_000))
    clock.advance(120)  # into the next month
    both(lambda c: c.admit(ctx, 10))
    for _ in range(3):
        both(lambda c: c.admit(big, 2**40))
    both(lambda c: c.check(huge.tenant_id, "tokens_per_day", 2**45))
    for c in clients:
        c.close()


def test_figures_beyond_int64_are_bounded_not_wrapped(redis_url: str, tenant: uuid.UUID) -> None:
    """A rate pushed far ahead (increments under a small limit), read under a limit at the 2^53 cap: its usage
    would not fit an int64; the reply is bounded, never a wrapped negative number."""
    limits = StaticLimits({tenant: make_config(tenant, tpm=1)})
    client = QuotaClient(redis_from_url(redis_url), limits, clock=ManualClock(MONTH_END))
    client.increment(tenant, "tokens_per_minute", 100_000)  # a TAT ~69 days ahead
    limits.set(make_config(tenant, tpm=2**62))
    usage = client.check(tenant, "tokens_per_minute", 0).current_usage
    assert usage == 2**62
    client.close()


def test_a_rate_pushed_decades_ahead_keeps_a_ttl(redis_url: str, tenant: uuid.UUID) -> None:
    """2^41 tokens under 1 token/minute: a TAT ~4 million years ahead. The hash's life is capped (~31 years),
    an integer PEXPIRE accepts (Lua formats 1e14 ms or more as "1e+14": the script failed after its write)."""
    limits = StaticLimits({tenant: make_config(tenant, tpm=1)})
    client = QuotaClient(redis_from_url(redis_url), limits, clock=ManualClock(MONTH_END))
    client.increment(tenant, "tokens_per_minute", 2**41)
    assert client.increment(tenant, "tokens_per_minute", 1) > 2**41
    ttl = redis_from_url(redis_url).pttl(state_key(tenant))
    assert 30 * 365 * 86_400_000 < ttl <= 10**12
    client.close()
