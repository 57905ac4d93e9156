"""The engine's behaviour through QuotaClient, on the embedded backend and on a real Redis."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from llmproxy.core import ManualClock, RequestContext, redis_from_url
from llmproxy.quota import (
    AsyncQuotaClient,
    InvalidQuotaRequest,
    QuotaClient,
    QuotaType,
    StaticLimits,
    UnknownTenant,
)
from llmproxy.ratelimit_config import EndpointLimit

CHAT = "/v1/chat/completions"


def ctx_for(tenant: uuid.UUID, **kw: Any) -> RequestContext:
    return RequestContext(tenant_id=str(tenant), **kw)


def by_name(admission: Any) -> dict[str, Any]:
    return {r.name: r for r in admission.results}


def test_admits_up_to_the_per_minute_limit_then_rejects_with_retry_after(
    make_client: Any, limits: Any, tenant: uuid.UUID
) -> None:
    limits.configure(rpm=5)
    client = make_client(deny_cache=False)
    ctx = ctx_for(tenant)
    assert [client.admit(ctx).allowed for _ in range(6)] == [True] * 5 + [False]
    rejected = client.admit(ctx)
    (limit,) = rejected.rejected
    assert limit.name == "tenant.requests_per_minute"
    assert limit.remaining == 0
    assert limit.retry_after == pytest.approx(12.0)  # one request every 60/5 s


def test_the_rate_refills_continuously(
    make_client: Any, limits: Any, tenant: uuid.UUID, clock: ManualClock
) -> None:
    limits.configure(rpm=6)
    client = make_client(deny_cache=False)
    ctx = ctx_for(tenant)
    for _ in range(6):
        assert client.admit(ctx).allowed
    assert not client.admit(ctx).allowed
    clock.advance(9.999)
    assert not client.admit(ctx).allowed
    clock.advance(0.001)
    assert client.admit(ctx).allowed
    assert not client.admit(ctx).allowed


def test_a_rejected_request_consumes_nothing_from_any_limit(
    make_client: Any, limits: Any, tenant: uuid.UUID
) -> None:
    limits.configure(
        endpoints={CHAT: EndpointLimit(requests_per_minute=2, tokens_per_minute=10**6, burst_capacity=2)},
    )
    client = make_client(deny_cache=False)
    chat = ctx_for(tenant, endpoint=CHAT)
    assert client.admit(chat, 10).allowed
    assert client.admit(chat, 10).allowed
    before = client.check(tenant, "requests_per_day", 0).current_usage
    tokens_before = client.check(tenant, "tokens_per_day", 0).current_usage
    rejected = client.admit(chat, 10)
    assert not rejected.allowed
    assert [r.name for r in rejected.rejected] == ["endpoint.requests_per_minute"]
    assert rejected.reservation is None
    assert client.check(tenant, "requests_per_day", 0).current_usage == before == 2
    assert client.check(tenant, "tokens_per_day", 0).current_usage == tokens_before == 20


def test_endpoint_burst_capacity_admits_a_burst_above_the_rate(
    make_client: Any, limits: Any, tenant: uuid.UUID, clock: ManualClock
) -> None:
    limits.configure(
        endpoints={CHAT: EndpointLimit(requests_per_minute=60, tokens_per_minute=10**6, burst_capacity=10)},
    )
    client = make_client(deny_cache=False)
    chat = ctx_for(tenant, endpoint=CHAT)
    assert sum(client.admit(chat).allowed for _ in range(15)) == 10
    clock.advance(1.0)
    assert sum(client.admit(chat).allowed for _ in range(5)) == 1


def test_every_applicable_limit_is_reported(client: QuotaClient, tenant: uuid.UUID) -> None:
    admission = client.admit(ctx_for(tenant, api_key_id="key-1", endpoint="/v1/unconfigured"), 100)
    assert set(by_name(admission)) == {
        "tenant.requests_per_minute",
        "tenant.requests_per_day",
        "tenant.tokens_per_minute",
        "tenant.tokens_per_day",
        "api_key.requests_per_minute",
        "api_key.tokens_per_minute",
    }
    key_tokens = by_name(admission)["api_key.tokens_per_minute"]
    assert (key_tokens.limit, key_tokens.remaining) == (10_000, 9_900)


def test_day_budget_resets_at_utc_midnight(
    make_client: Any, limits: Any, tenant: uuid.UUID, clock: ManualClock
) -> None:
    limits.configure(rpd=3)
    client = make_client(deny_cache=False)
    ctx = ctx_for(tenant)
    results = [client.admit(ctx) for _ in range(4)]
    assert [a.allowed for a in results] == [True, True, True, False]
    day = by_name(results[-1])["tenant.requests_per_day"]
    midnight = dt.datetime(2026, 4, 1, tzinfo=dt.UTC).timestamp()
    assert day.reset_at == midnight
    assert day.retry_after == pytest.approx(midnight - clock.now())
    assert results[-1].rejected[0].is_budget
    clock.set(midnight - 0.001)
    assert not client.admit(ctx).allowed
    clock.set(midnight)
    assert client.admit(ctx).allowed


def test_month_budget_is_calendar_aligned(make_client: Any, tenant: uuid.UUID, clock: ManualClock) -> None:
    client = make_client(monthly_limits={"tokens_per_month": 1000})
    assert client.increment(tenant, QuotaType.TOKENS_PER_MONTH, 990) == 990
    result = client.check(tenant, "tokens_per_month", 20)
    assert not result.allowed
    assert result.remaining == 10
    assert result.reset_at == dt.datetime(2026, 4, 1, tzinfo=dt.UTC).timestamp()
    clock.set(result.reset_at)
    assert client.check(tenant, "tokens_per_month", 20).current_usage == 0


@pytest.mark.parametrize(
    ("now", "next_month"),
    [
        ("2024-02-10", "2024-03-01"),  # leap year February
        ("2026-12-31", "2027-01-01"),
        ("2100-02-28", "2100-03-01"),
    ],
)
def test_month_boundaries_follow_the_gregorian_calendar(
    redis_url: str, limits: Any, tenant: uuid.UUID, now: str, next_month: str
) -> None:
    start = dt.datetime.fromisoformat(now).replace(tzinfo=dt.UTC).timestamp()
    client = QuotaClient(
        redis_from_url(redis_url), limits, clock=ManualClock(start), monthly_limits={"requests_per_month": 5}
    )
    expected = dt.datetime.fromisoformat(next_month).replace(tzinfo=dt.UTC).timestamp()
    assert client.check(tenant, "requests_per_month", 1).reset_at == expected
    client.close()


def test_settle_refunds_unused_tokens(client: QuotaClient, tenant: uuid.UUID) -> None:
    admission = client.admit(ctx_for(tenant), 1000)
    assert client.check(tenant, "tokens_per_day", 0).current_usage == 1000
    settlement = client.settle(admission.reservation, 300)
    assert (settlement.settled, settlement.charged) == (True, -700)
    assert client.check(tenant, "tokens_per_day", 0).current_usage == 300
    assert client.check(tenant, "tokens_per_minute", 0).current_usage == 300


def test_settle_charges_tokens_beyond_the_estimate(client: QuotaClient, tenant: uuid.UUID) -> None:
    admission = client.admit(ctx_for(tenant), 100)
    assert client.settle(admission.reservation, 250).charged == 150
    assert client.check(tenant, "tokens_per_day", 0).current_usage == 250


def test_settle_happens_at_most_once(client: QuotaClient, tenant: uuid.UUID) -> None:
    admission = client.admit(ctx_for(tenant), 1000)
    assert client.settle(admission.reservation, 0).settled
    assert not client.settle(admission.reservation, 0).settled
    assert client.check(tenant, "tokens_per_day", 0).current_usage == 0


def test_a_refund_never_leaks_into_the_next_day(
    client: QuotaClient, tenant: uuid.UUID, clock: ManualClock
) -> None:
    admission = client.admit(ctx_for(tenant), 1000)
    clock.set(dt.datetime(2026, 4, 1, 0, 0, 1, tzinfo=dt.UTC).timestamp())
    client.increment(tenant, "tokens_per_day", 50)
    client.settle(admission.reservation, 0)
    assert client.check(tenant, "tokens_per_day", 0).current_usage == 50


def test_a_rate_refund_never_raises_capacity_above_full(
    make_client: Any, limits: Any, tenant: uuid.UUID, clock: ManualClock
) -> None:
    limits.configure(tpm=600)
    client = make_client()
    admission = client.admit(ctx_for(tenant), 600)
    clock.advance(60)
    client.settle(admission.reservation, 0)
    assert client.check(tenant, "tokens_per_minute", 0).remaining == 600
    assert client.admit(ctx_for(tenant), 600).allowed
    assert not client.admit(ctx_for(tenant), 1).allowed


def test_a_rate_refund_never_erases_other_requests_charges(
    make_client: Any, limits: Any, tenant: uuid.UUID, clock: ManualClock
) -> None:
    # the reviewer's case: A's charge drained fully, B's is in place; refunding A must not free B's tokens
    limits.configure(tpm=1000)
    client = make_client(deny_cache=False)
    a = client.admit(ctx_for(tenant), 1000)
    clock.advance(60)
    b = client.admit(ctx_for(tenant), 1000)
    assert b.allowed
    client.settle(b.reservation, 1000)
    client.settle(a.reservation, 0)
    assert not client.admit(ctx_for(tenant), 1000).allowed
    assert client.check(tenant, "tokens_per_minute", 0).remaining == 0


def test_a_rate_refund_is_capped_by_the_undrained_part_of_the_reservation(
    make_client: Any, limits: Any, tenant: uuid.UUID, clock: ManualClock
) -> None:
    limits.configure(tpm=600)
    client = make_client(deny_cache=False)
    a = client.admit(ctx_for(tenant), 300)  # its charge ends 30 s from now
    assert client.admit(ctx_for(tenant), 300).allowed  # this one's 30 s after that
    clock.advance(20)  # 200 tokens drained (all A's), 400 held: 100 of A's, 300 of the other's
    client.settle(a.reservation, 0)  # refunds A's 100 undrained tokens, not 300
    assert client.check(tenant, "tokens_per_minute", 0).remaining == 300
    assert client.check(tenant, "tokens_per_day", 0).current_usage == 300  # budgets refund all of it


def test_an_expired_reservation_is_not_settled(
    make_client: Any, tenant: uuid.UUID, clock: ManualClock
) -> None:
    client = make_client(reservation_ttl=30)
    admission = client.admit(ctx_for(tenant), 100)
    clock.advance(31)  # past the lease
    assert not client.settle(admission.reservation, 0).settled
    assert client.check(tenant, "tokens_per_day", 0).current_usage == 100


def test_a_reservation_within_its_lease_is_settled_once(
    make_client: Any, tenant: uuid.UUID, clock: ManualClock
) -> None:
    client = make_client(reservation_ttl=30)
    admission = client.admit(ctx_for(tenant), 100)
    clock.advance(29)
    assert client.settle(admission.reservation, 40).settled
    assert not client.settle(admission.reservation, 0).settled
    assert client.check(tenant, "tokens_per_day", 0).current_usage == 40


def test_check_consumes_nothing_and_increment_is_unconditional(
    make_client: Any, limits: Any, tenant: uuid.UUID
) -> None:
    limits.configure(tpd=100)
    client = make_client()
    assert client.check(tenant, "tokens_per_day", 100).allowed
    assert not client.check(tenant, "tokens_per_day", 101).allowed
    assert client.increment(tenant, "tokens_per_day", 80) == 80
    assert client.increment(tenant, "tokens_per_day", 80) == 160
    result = client.check(tenant, "tokens_per_day", 1)
    assert (result.allowed, result.current_usage, result.limit, result.remaining) == (False, 160, 100, 0)


def test_rate_quotas_are_reachable_through_check_and_increment(
    client: QuotaClient, tenant: uuid.UUID
) -> None:
    assert client.increment(tenant, "requests_per_minute", 10) == 10
    result = client.check(str(tenant), QuotaType.REQUESTS_PER_MINUTE, 1)
    assert (result.current_usage, result.remaining, result.limit) == (10, 990, 1000)


def test_a_request_larger_than_the_limit_can_never_be_admitted(
    make_client: Any, limits: Any, tenant: uuid.UUID
) -> None:
    limits.configure(tpm=1000)
    admission = make_client().admit(ctx_for(tenant), 1001)
    assert not admission.allowed
    assert admission.retry_after is None


def test_a_zero_limit_admits_nothing(make_client: Any, limits: Any, tenant: uuid.UUID) -> None:
    limits.configure(rpm=0)
    assert not make_client().admit(ctx_for(tenant)).allowed


def test_the_deny_cache_rejects_without_asking_redis(
    make_client: Any, limits: Any, tenant: uuid.UUID, clock: ManualClock
) -> None:
    limits.configure(rpm=1)
    client = make_client()
    assert client.admit(ctx_for(tenant)).allowed
    assert not client.admit(ctx_for(tenant)).from_deny_cache
    cached = client.admit(ctx_for(tenant))
    assert cached.from_deny_cache
    assert not cached.allowed
    assert cached.retry_after == pytest.approx(60.0)
    assert client.stats.deny_cache_hits == 1
    clock.advance(60)
    assert client.admit(ctx_for(tenant)).allowed


def test_the_deny_cache_is_ignored_once_the_limit_changes(
    make_client: Any, limits: Any, tenant: uuid.UUID, clock: ManualClock
) -> None:
    limits.configure(rpd=2)
    client = make_client()
    assert [client.admit(ctx_for(tenant)).allowed for _ in range(3)] == [True, True, False]
    assert client.admit(ctx_for(tenant)).from_deny_cache  # cached until UTC midnight
    limits.configure(rpd=1000)  # the admin raises the budget
    admission = client.admit(ctx_for(tenant))
    assert (admission.allowed, admission.from_deny_cache) == (True, False)

    limits.configure(rpm=1)
    clock.advance(60)
    assert client.admit(ctx_for(tenant)).allowed
    assert client.admit(ctx_for(tenant)).rejected
    assert client.admit(ctx_for(tenant)).from_deny_cache  # cached for 60 s at 1/min
    limits.configure(rpm=6)  # the stored TAT is a time: at 6/min the next request fits 10 s from now
    clock.advance(10)
    assert client.admit(ctx_for(tenant)).allowed


def test_a_token_budget_denial_is_cached_for_at_most_deny_cache_max_ttl(
    make_client: Any, limits: Any, tenant: uuid.UUID, clock: ManualClock
) -> None:
    limits.configure(tpd=100)
    client = make_client()  # deny_cache_max_ttl defaults to 1 s
    other_process = make_client(deny_cache=False)
    held = other_process.admit(ctx_for(tenant), 100)
    assert not client.admit(ctx_for(tenant), 1).allowed  # the day's budget is exhausted
    assert client.admit(ctx_for(tenant), 1).from_deny_cache
    other_process.settle(held.reservation, 0)  # a refund frees the budget
    clock.advance(1)
    assert client.admit(ctx_for(tenant), 1).allowed


def test_deny_cache_max_ttl_is_validated(make_client: Any) -> None:
    with pytest.raises(InvalidQuotaRequest):
        make_client(deny_cache_max_ttl=-1)


def test_shadow_mode_reports_but_never_rejects(make_client: Any, limits: Any, tenant: uuid.UUID) -> None:
    limits.configure(rpm=1)
    client = make_client(shadow=True)
    assert client.admit(ctx_for(tenant)).allowed
    shadowed = client.admit(ctx_for(tenant))
    assert shadowed.allowed
    assert shadowed.shadow_rejected
    assert client.stats.shadow_rejections == 1
    assert client.check(tenant, "requests_per_minute", 0).current_usage == 1


def test_redis_time_is_used_when_no_clock_is_injected(redis_url: str, limits: Any, tenant: uuid.UUID) -> None:
    client = QuotaClient(redis_from_url(redis_url), limits)
    import time

    before = time.time()
    result = client.check(tenant, "requests_per_minute", 1)
    after = time.time()
    assert before - 1 <= result.reset_at <= after + 1
    client.close()


@pytest.mark.parametrize("estimate", [-1, 1.5, True, "10"])
def test_a_bad_estimate_is_a_clear_error(client: QuotaClient, tenant: uuid.UUID, estimate: Any) -> None:
    with pytest.raises(InvalidQuotaRequest, match="estimate_tokens") as err:
        client.admit(ctx_for(tenant), estimate)
    assert err.value.field == "estimate_tokens"


@pytest.mark.parametrize("tenant_id", ["not-a-uuid", "", None, 42])
def test_a_malformed_tenant_id_is_a_clear_error(client: QuotaClient, tenant_id: Any) -> None:
    with pytest.raises(InvalidQuotaRequest, match="tenant_id"):
        client.check(tenant_id, "requests_per_day", 1)


@pytest.mark.parametrize("api_key_id", ["", "key with space", "k\x00", "k" * 201])
def test_a_malformed_api_key_id_is_a_clear_error(
    client: QuotaClient, tenant: uuid.UUID, api_key_id: str
) -> None:
    with pytest.raises(InvalidQuotaRequest, match="api_key_id"):
        client.admit(ctx_for(tenant, api_key_id=api_key_id))


def test_an_unknown_quota_type_is_a_clear_error(client: QuotaClient, tenant: uuid.UUID) -> None:
    with pytest.raises(InvalidQuotaRequest, match="quota_type"):
        client.check(tenant, "requests_per_fortnight", 1)
    with pytest.raises(InvalidQuotaRequest, match="tokens_per_month"):
        client.check(tenant, "tokens_per_month", 1)


def test_negative_amounts_are_rejected(client: QuotaClient, tenant: uuid.UUID) -> None:
    with pytest.raises(InvalidQuotaRequest, match="amount"):
        client.increment(tenant, "tokens_per_day", -5)
    admission = client.admit(ctx_for(tenant), 10)
    with pytest.raises(InvalidQuotaRequest, match="actual_tokens"):
        client.settle(admission.reservation, -1)


def test_an_unknown_tenant_is_a_clear_error(redis_url: str) -> None:
    client = QuotaClient(redis_from_url(redis_url), StaticLimits(defaults=None))
    with pytest.raises(UnknownTenant, match="unknown"):
        client.admit(RequestContext(tenant_id=str(uuid.uuid4())))
    client.close()


def test_a_bad_failure_policy_is_a_clear_error(redis_url: str, limits: Any) -> None:
    with pytest.raises(InvalidQuotaRequest, match="failure_policy"):
        QuotaClient(redis_from_url(redis_url), limits, failure_policy="maybe")


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), 1e14, 30 * 86400 + 1, "60", True])
def test_a_bad_reservation_ttl_is_a_clear_error(redis_url: str, limits: Any, ttl: Any) -> None:
    with pytest.raises(InvalidQuotaRequest, match="reservation_ttl"):
        QuotaClient(redis_from_url(redis_url), limits, reservation_ttl=ttl)
    QuotaClient(redis_from_url(redis_url), limits, reservation_ttl=30 * 86400).close()  # the longest allowed


def unconfigured(config: Any, **limits: Any) -> Any:
    """``config`` with some limits set to None, as a custom limits source may build them (no validation)."""
    sections = {"global_limit": config.global_limit, "api_key_limit": config.api_key_limit}
    changed = {}
    for section, model in sections.items():
        values = {k: limits.get(k if section == "global_limit" else f"key_{k}", v) for k, v in model}
        changed[section] = type(model).model_construct(**values)
    return type(config).model_construct(**{**dict(config), **changed})


def test_a_limit_set_to_none_by_a_custom_source_is_not_evaluated(
    make_client: Any, limits: Any, tenant: uuid.UUID
) -> None:
    limits.configure(
        rpm=2, endpoints={CHAT: EndpointLimit(requests_per_minute=5, tokens_per_minute=10, burst_capacity=5)}
    )
    config = limits.get(tenant)
    endpoint = type(config.endpoint_limits[CHAT]).model_construct(
        requests_per_minute=5, tokens_per_minute=None, burst_capacity=None
    )
    config = unconfigured(config, tokens_per_day=None, requests_per_minute=None, key_tokens_per_minute=None)
    limits.set(type(config).model_construct(**{**dict(config), "endpoint_limits": {CHAT: endpoint}}))
    client = make_client(deny_cache=False)
    admission = client.admit(ctx_for(tenant, endpoint=CHAT, api_key_id="k1"), 1000)
    assert admission.allowed  # 1000 tokens exceed no configured limit (endpoint tpm is None)
    assert [r.name for r in admission.results] == [
        "tenant.requests_per_day",
        "tenant.tokens_per_minute",
        "api_key.requests_per_minute",
        "endpoint.requests_per_minute",
    ]
    assert by_name(admission)["endpoint.requests_per_minute"].limit == 5  # burst defaults to the rate
    assert [client.admit(ctx_for(tenant), 0).allowed for _ in range(3)] == [True] * 3  # rpm=None: no limit
    with pytest.raises(InvalidQuotaRequest):
        client.check(tenant, "requests_per_minute", 1)


def test_the_script_is_loaded_again_after_a_script_flush(
    redis_url: str, limits: Any, tenant: uuid.UUID
) -> None:
    client = QuotaClient(redis_from_url(redis_url), limits)
    assert client.admit(ctx_for(tenant), 10).allowed
    client.redis.script_flush()
    assert client.admit(ctx_for(tenant), 10).allowed
    assert client.check(tenant, "requests_per_day", 0).current_usage == 2
    client.close()


async def test_the_async_client_loads_the_script_again_after_a_script_flush(
    aclient: AsyncQuotaClient, tenant: uuid.UUID
) -> None:
    assert (await aclient.admit(ctx_for(tenant), 10)).allowed
    await aclient.redis.script_flush()
    assert (await aclient.admit(ctx_for(tenant), 10)).allowed
    assert (await aclient.check(tenant, "requests_per_day", 0)).current_usage == 2


class StuckClock:
    """A clock that always says ``value`` (a broken or misconfigured one)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def now(self) -> float:
        return self.value

    def monotonic(self) -> float:
        return 0.0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 1e18, -1.0, -0.0005])
def test_a_clock_outside_any_sensible_time_is_a_clear_error(
    redis_url: str, limits: Any, tenant: uuid.UUID, value: float
) -> None:
    """Not Python's ValueError / OverflowError / struct.error; and a negative time is not replaced by Redis
    TIME (the script's "no clock" marker)."""
    client = QuotaClient(redis_from_url(redis_url), limits, clock=StuckClock(value))
    for call in (
        lambda: client.admit(ctx_for(tenant), 1),
        lambda: client.check(tenant, "requests_per_day", 1),
        lambda: client.increment(tenant, "requests_per_day", 1),
    ):
        with pytest.raises(InvalidQuotaRequest) as err:
            call()
        assert err.value.field == "clock"
    assert client.redis.keys("llmproxy:*") == []  # nothing was written
    client.close()


def test_an_endpoint_path_too_long_for_a_field_of_the_tenants_hash_is_a_clear_error(
    make_client: Any, limits: Any, tenant: uuid.UUID
) -> None:
    path = "/v1/" + "a" * 70_000  # a custom limits source may hold any path (the validated model: 500 chars)
    config = limits.get(tenant)
    endpoint = EndpointLimit(requests_per_minute=5, tokens_per_minute=10, burst_capacity=5)
    limits.set(type(config).model_construct(**{**dict(config), "endpoint_limits": {path: endpoint}}))
    client = make_client()
    with pytest.raises(InvalidQuotaRequest) as err:
        client.admit(ctx_for(tenant, endpoint=path), 1)
    assert err.value.field == "endpoint"
    assert client.admit(ctx_for(tenant, endpoint="/v1/other"), 1).allowed  # other paths are unaffected


@pytest.mark.parametrize("suffix", ["\n", "\r\n", "\x00", "\t"])
def test_a_path_with_a_control_character_does_not_slip_past_an_endpoint_limit(
    make_client: Any, limits: Any, tenant: uuid.UUID, suffix: str
) -> None:
    """Starlette routes "/v1/chat/completions\\n" to "/v1/chat/completions", whose limit is keyed by the exact
    path: such a path is refused, not admitted without the endpoint's limit."""
    config = limits.get(tenant)
    endpoint = EndpointLimit(requests_per_minute=1, tokens_per_minute=1000, burst_capacity=1)
    limits.set(config.model_copy(update={"endpoint_limits": {"/v1/chat/completions": endpoint}}))
    client = make_client()
    assert client.admit(ctx_for(tenant, endpoint="/v1/chat/completions"), 1).allowed
    assert not client.admit(ctx_for(tenant, endpoint="/v1/chat/completions"), 1).allowed
    with pytest.raises(InvalidQuotaRequest) as err:
        client.admit(ctx_for(tenant, endpoint="/v1/chat/completions" + suffix), 1)
    assert err.value.field == "endpoint"
    assert client.admit(ctx_for(tenant, endpoint="/v1/embeddings"), 1).allowed  # unlimited paths still pass


def test_a_configuration_shared_by_every_tenant_still_counts_each_tenant_apart(
    redis_url: str, clock: ManualClock
) -> None:
    """A custom limits source may hand out one configuration object (with any tenant_id) for every tenant."""
    from .conftest import make_config

    shared = make_config(uuid.uuid4())

    class OneForAll:
        def get(self, tenant_id: uuid.UUID) -> Any:
            return shared

    client = QuotaClient(redis_from_url(redis_url), OneForAll(), clock=clock)
    first, second = uuid.uuid4(), uuid.uuid4()
    assert client.admit(ctx_for(first), 10).allowed
    assert client.increment(first, "tokens_per_day", 5) == 15
    assert client.check(second, "tokens_per_day", 0).current_usage == 0
    assert client.increment(second, "tokens_per_day", 1) == 1
    assert client.check(shared.tenant_id, "requests_per_day", 0).current_usage == 0
    client.close()


def test_a_script_call_is_packed_as_redis_py_packs_it() -> None:
    """Plans encode their EVALSHA themselves (cheaper than redis-py): the same bytes redis-py would send."""
    import redis

    from llmproxy.core import PackedCommand
    from llmproxy.quota._limits import LimitKind, LimitSpec, Unit, state_key
    from llmproxy.quota._plan import AdmitShape, Mode, admit_plan, single_plan

    tenant = str(uuid.uuid4())
    spec = LimitSpec(
        name="tokens_per_minute",
        unit=Unit.TOKENS,
        kind=LimitKind.RATE,
        key=f"{state_key(tenant)}:tpm",
        field="tpm",
        limit=100,
        burst=100,
    )
    shape = AdmitShape.build(object(), tenant, [spec])
    plans = [admit_plan(shape, 10, 30_000), single_plan(Mode.CHECK, tenant, spec, 1)]
    for plan in plans:
        for now in (None, 1_733_000_000_000):
            command = plan.command(now)
            assert type(command) is PackedCommand
            assert command.packed == b"".join(redis.Connection().pack_command(*command))
