"""Per-model limits, key model allow-lists and spend budgets: evaluated in the same script call as every
other limit (all-or-nothing), reserved at admit, settled with the real cost, alerting once per period."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmproxy.core import ManualClock, RequestContext, redis_from_url, report_usage
from llmproxy.quota import (
    BudgetAlert,
    InvalidQuotaRequest,
    ModelNotAllowed,
    ModelNotPriced,
    PerMillionTokens,
    QuotaClient,
    StaticLimits,
    StaticPrices,
    TokenEstimate,
)
from llmproxy.quota._http import rate_limit_headers, rejection
from llmproxy.ratelimit_config import ApiKeyPolicy, Budget, Budgets, ModelLimit

from .conftest import MONTH_END, make_config

CHAT = "/v1/chat/completions"
DAY = 86400.0
#: gpt-4o: $2.50 in / $10 out per million tokens = 2.5 / 10 micro-units per token
PRICES = {"gpt-4o": ("2.5", "10"), "gpt-4o-mini": ("0.15", "0.6")}


def configure(tenant: uuid.UUID, **changes: Any) -> StaticLimits:
    base = make_config(tenant, rpm=10**6, rpd=10**6, tpm=10**9, tpd=10**9, key_rpm=10**6, key_tpm=10**9)
    return StaticLimits({tenant: base.model_copy(update=changes)})


@pytest.fixture
def make(redis_url: str, clock: ManualClock) -> Any:
    made: list[QuotaClient] = []

    def build(limits: StaticLimits, **options: Any) -> QuotaClient:
        options.setdefault("clock", clock)
        options.setdefault("deny_cache", False)
        client = QuotaClient(redis_from_url(redis_url), limits, **options)
        made.append(client)
        return client

    yield build
    for client in made:
        client.close()


def ctx(tenant: uuid.UUID, key: str | None = "key-1", model: str | None = None) -> RequestContext:
    return RequestContext(tenant_id=tenant, api_key_id=key, endpoint=CHAT, model=model)


# -- per-model limits ----------------------------------------------------------------------------------------


def test_each_model_has_its_own_limits_and_a_rejection_names_the_model_limit(
    make: Any, tenant: uuid.UUID
) -> None:
    limits = configure(
        tenant,
        model_limits={
            "gpt-4o": ModelLimit(tokens_per_minute=1000),
            "gpt-4o-mini": ModelLimit(requests_per_minute=3, tokens_per_day=10_000),
        },
    )
    client = make(limits)
    assert client.admit(ctx(tenant), TokenEstimate(600, 0, "gpt-4o")).allowed
    refused = client.admit(ctx(tenant), TokenEstimate(600, 0, "gpt-4o"))
    assert not refused.allowed
    assert [r.name for r in refused.rejected] == ["model[gpt-4o].tokens_per_minute"]
    # the other model is untouched by gpt-4o's usage, and held by its own limits
    assert [client.admit(ctx(tenant), TokenEstimate(10, 0, "gpt-4o-mini")).allowed for _ in range(4)] == [
        True, True, True, False,
    ]  # fmt: skip
    # a model without limits (and a request without a model) meets only the other limits
    assert client.admit(ctx(tenant), TokenEstimate(10**6, 0, "o3")).allowed
    assert client.admit(ctx(tenant), 10**6).allowed


def test_the_model_comes_from_the_request_context_when_the_estimate_names_none(
    make: Any, tenant: uuid.UUID
) -> None:
    client = make(configure(tenant, model_limits={"gpt-4o": ModelLimit(requests_per_minute=1)}))
    assert client.admit(ctx(tenant, model="gpt-4o"), 5).allowed
    assert not client.admit(ctx(tenant, model="gpt-4o"), 5).allowed
    assert not client.admit(ctx(tenant, model="other"), TokenEstimate(1, 1, "gpt-4o")).allowed


def test_a_model_limit_rejection_consumes_no_other_limit(make: Any, tenant: uuid.UUID) -> None:
    """All-or-nothing: a request refused by its model's limit leaves the tenant's, the key's and the budget's
    counters as they were; one refused by the budget leaves the model's."""
    limits = configure(
        tenant,
        model_limits={"gpt-4o": ModelLimit(tokens_per_minute=1000)},
        budgets=Budgets(day=Budget(limit_micros=20_000)),
    )
    client = make(limits, prices=StaticPrices(PRICES))
    before = (client.check(tenant, "tokens_per_day", 0).current_usage, client.spend(tenant)[0].usage)
    assert not client.admit(ctx(tenant), TokenEstimate(2000, 0, "gpt-4o")).allowed  # model limit
    after = (client.check(tenant, "tokens_per_day", 0).current_usage, client.spend(tenant)[0].usage)
    assert after == before == (0, 0)
    # 900 output tokens of gpt-4o cost 9 000 micro-units: the budget admits two, refuses the third
    assert client.admit(ctx(tenant), TokenEstimate(0, 900, "gpt-4o")).allowed
    client.core._shapes.clear()  # (no effect on the counters: a cache of what admits send)
    limits.set(
        limits.get(tenant).model_copy(
            update={"model_limits": {"gpt-4o": ModelLimit(tokens_per_minute=10**6)}}
        )
    )
    assert client.admit(ctx(tenant), TokenEstimate(0, 900, "gpt-4o")).allowed
    refused = client.admit(ctx(tenant), TokenEstimate(0, 900, "gpt-4o"))
    assert [r.name for r in refused.rejected] == ["tenant.spend_per_day"]
    assert client.check(tenant, "tokens_per_day", 0).current_usage == 1800  # the refused 900 not counted
    assert client.spend(tenant)[0].usage == 18_000


def test_a_key_may_be_restricted_to_models_before_anything_is_consumed(make: Any, tenant: uuid.UUID) -> None:
    limits = configure(tenant, api_keys={"key-1": ApiKeyPolicy(allowed_models=frozenset({"gpt-4o-mini"}))})
    client = make(limits)
    with pytest.raises(ModelNotAllowed) as raised:
        client.admit(ctx(tenant, "key-1"), TokenEstimate(10, 10, "gpt-4o"))
    assert raised.value.model == "gpt-4o"
    assert client.check(tenant, "requests_per_day", 0).current_usage == 0
    assert client.admit(ctx(tenant, "key-1"), TokenEstimate(10, 10, "gpt-4o-mini")).allowed
    assert client.admit(ctx(tenant, "key-2"), TokenEstimate(10, 10, "gpt-4o")).allowed  # another key: free
    empty = configure(tenant, api_keys={"key-1": ApiKeyPolicy(allowed_models=frozenset())})
    with pytest.raises(ModelNotAllowed):
        make(empty).admit(ctx(tenant, "key-1", "gpt-4o-mini"))


def test_an_oversized_model_name_is_refused_where_it_matters(make: Any, tenant: uuid.UUID) -> None:
    client = make(
        configure(tenant, budgets=Budgets(day=Budget(limit_micros=10**6))), prices=StaticPrices(PRICES)
    )
    with pytest.raises(InvalidQuotaRequest) as raised:
        client.admit(ctx(tenant), TokenEstimate(1, 1, "m" * 10_000))
    assert raised.value.field == "model"


# -- spend budgets -----------------------------------------------------------------------------------------


def test_the_estimated_cost_is_reserved_and_the_real_cost_replaces_it(make: Any, tenant: uuid.UUID) -> None:
    limits = configure(tenant, budgets=Budgets(day=Budget(limit_micros=1_000_000)))
    client = make(limits, prices=StaticPrices(PRICES))
    admission = client.admit(ctx(tenant), TokenEstimate(1000, 500, "gpt-4o"))
    assert admission.allowed
    estimated = 1000 * 2.5 + 500 * 10  # 7 500 micro-units
    assert admission.reservation is not None
    assert admission.reservation.estimate_cost == estimated
    assert client.spend(tenant)[0].usage == estimated
    actual = admission.reservation.cost_of(1000, 120)  # the stream ended early: 3 700
    assert actual == 3700
    settlement = client.settle(admission.reservation, 1120, actual)
    assert settlement.settled
    assert settlement.charged_cost == actual - estimated
    (budget,) = client.spend(tenant)
    assert (budget.name, budget.unit, budget.window, budget.usage) == (
        "tenant.spend_per_day",
        "spend",
        "day",
        3700,
    )
    assert budget.remaining == 1_000_000 - 3700
    # settled once: a second settle changes nothing
    assert not client.settle(admission.reservation, 0, 0).settled
    assert client.spend(tenant)[0].usage == 3700


def test_a_budget_that_would_be_exceeded_is_insufficient_quota_until_its_period_resets(
    make: Any, tenant: uuid.UUID, clock: ManualClock
) -> None:
    limits = configure(tenant, budgets=Budgets(month=Budget(limit_micros=10_000)))
    client = make(limits, prices=StaticPrices(PRICES))
    assert client.admit(ctx(tenant), TokenEstimate(0, 900, "gpt-4o")).allowed  # 9 000
    refused = client.admit(ctx(tenant), TokenEstimate(0, 200, "gpt-4o"))  # 2 000 more: over
    assert not refused.allowed
    (result,) = refused.rejected
    assert result.name == "tenant.spend_per_month"
    assert result.window == "month"
    # the clock stands an hour before the month ends (2026-03-31 23:59 UTC - 1 h): it resets then
    assert refused.retry_after == pytest.approx(MONTH_END + 60 - clock.now())
    error = rejection(refused, clock.now())
    assert (error.status, error.code) == (429, "insufficient_quota")
    assert "tenant.spend_per_month" in error.message
    assert "resets in" in error.message
    clock.advance(MONTH_END + 61 - clock.now())  # April
    assert client.admit(ctx(tenant), TokenEstimate(0, 200, "gpt-4o")).allowed


def test_key_budgets_and_tenant_budgets_hold_together(make: Any, tenant: uuid.UUID) -> None:
    limits = configure(
        tenant,
        budgets=Budgets(day=Budget(limit_micros=30_000)),
        api_keys={"key-1": ApiKeyPolicy(budgets=Budgets(day=Budget(limit_micros=10_000)))},
    )
    client = make(limits, prices=StaticPrices(PRICES))
    assert client.admit(ctx(tenant, "key-1"), TokenEstimate(0, 1000, "gpt-4o")).allowed  # 10 000
    refused = client.admit(ctx(tenant, "key-1"), TokenEstimate(0, 1, "gpt-4o"))
    assert [r.name for r in refused.rejected] == ["api_key.spend_per_day"]
    assert client.admit(ctx(tenant, "key-2"), TokenEstimate(0, 2000, "gpt-4o")).allowed  # 20 000 more
    refused = client.admit(ctx(tenant, "key-2"), TokenEstimate(0, 1, "gpt-4o"))
    assert [r.name for r in refused.rejected] == ["tenant.spend_per_day"]
    spend = {r.name: r.usage for r in client.spend(tenant, "key-1")}
    assert spend == {"tenant.spend_per_day": 30_000, "api_key.spend_per_day": 10_000}


def test_an_overrun_is_carried_as_debt_into_the_next_period(
    make: Any, tenant: uuid.UUID, clock: ManualClock
) -> None:
    limits = configure(tenant, budgets=Budgets(day=Budget(limit_micros=10_000)))
    client = make(limits, prices=StaticPrices(PRICES))
    admission = client.admit(ctx(tenant), TokenEstimate(0, 500, "gpt-4o"))  # reserves 5 000
    assert admission.reservation is not None
    client.settle(admission.reservation, 1300, admission.reservation.cost_of(0, 1300))  # cost 13 000
    (budget,) = client.spend(tenant)
    assert budget.usage == 13_000
    assert budget.remaining == 0
    assert not client.admit(ctx(tenant), TokenEstimate(0, 1, "gpt-4o")).allowed
    clock.advance(DAY)
    assert client.spend(tenant)[0].usage == 3000  # the next day starts 3 000 in debt
    assert client.admit(ctx(tenant), TokenEstimate(0, 700, "gpt-4o")).allowed  # 3 000 + 7 000 = 10 000
    assert not client.admit(ctx(tenant), TokenEstimate(0, 1, "gpt-4o")).allowed
    clock.advance(DAY)  # not over the limit: nothing carried
    assert client.spend(tenant)[0].usage == 0


def _month_start(year: int, month: int) -> float:
    return dt.datetime(year + month // 13, (month - 1) % 12 + 1, 1, tzinfo=dt.UTC).timestamp()


#: months whose ends the script's calendar must get right: each month of a leap year, Februaries of
#: century years (2100 and 2200 are not leap years, 2000 and 2400 are), Decembers, and far ones
CALENDAR_MONTHS = [(2024, m) for m in range(1, 13)] + [
    (2000, 2), (2100, 2), (2200, 2), (2400, 2), (2026, 12), (2099, 12), (1970, 1), (9999, 10),
]  # fmt: skip


@pytest.mark.parametrize("offset", [0, 14, -12])  # the calendar's UTC offset: its whole-hour extremes
def test_monthly_budgets_follow_the_gregorian_calendar_and_carry_debt_across_each_month_end(
    make: Any, offset: int
) -> None:
    """At the last millisecond of each month (local to the budget's offset) an overrun is settled; the next
    month starts in its debt (the script finds the window just ended by its start) and resets at the start
    of the month after."""
    for year, month in CALENDAR_MONTHS:
        tenant = uuid.uuid4()
        end = _month_start(year, month + 1) - offset * 3600
        after = _month_start(year, month + 2) - offset * 3600
        clock = ManualClock(end - 0.001)
        budget = Budget(limit_micros=10_000, utc_offset_hours=offset)
        client = make(
            configure(tenant, budgets=Budgets(month=budget)), prices=StaticPrices(PRICES), clock=clock
        )
        admission = client.admit(ctx(tenant), TokenEstimate(0, 500, "gpt-4o"))
        assert admission.reservation is not None
        client.settle(admission.reservation, 1300, admission.reservation.cost_of(0, 1300))  # 13 000
        (spent,) = client.spend(tenant)
        assert (spent.usage, spent.reset_at) == (13_000, end), (year, month)
        clock.set(end)
        (spent,) = client.spend(tenant)
        assert (spent.usage, spent.reset_at) == (3000, after), (year, month)


def test_a_price_change_applies_to_requests_admitted_after_it(make: Any, tenant: uuid.UUID) -> None:
    prices = StaticPrices(PRICES)
    client = make(configure(tenant, budgets=Budgets(month=Budget(limit_micros=10**9))), prices=prices)
    before = client.admit(ctx(tenant), TokenEstimate(1000, 1000, "gpt-4o"))
    prices.set("gpt-4o", "5", "20")  # doubled mid-period
    after = client.admit(ctx(tenant), TokenEstimate(1000, 1000, "gpt-4o"))
    assert before.reservation is not None
    assert after.reservation is not None
    assert (before.reservation.estimate_cost, after.reservation.estimate_cost) == (12_500, 25_000)
    # the one in flight settles at the price it was admitted with
    assert before.reservation.cost_of(1000, 500) == 7_500
    client.settle(before.reservation, 1500, before.reservation.cost_of(1000, 500))
    client.settle(after.reservation, 1500, after.reservation.cost_of(1000, 500))
    assert client.spend(tenant)[0].usage == 7_500 + 15_000


def test_a_model_without_a_price_is_denied_or_admitted_and_counted(make: Any, tenant: uuid.UUID) -> None:
    limits = configure(tenant, budgets=Budgets(day=Budget(limit_micros=10**6)))
    deny = make(limits, prices=StaticPrices(PRICES))
    with pytest.raises(ModelNotPriced):
        deny.admit(ctx(tenant), TokenEstimate(10, 10, "llama-unknown"))
    with pytest.raises(ModelNotPriced):
        deny.admit(ctx(tenant), 10)  # no model at all
    assert deny.check(tenant, "requests_per_day", 0).current_usage == 0
    allow = make(limits, prices=StaticPrices(PRICES), unpriced="allow")
    admission = allow.admit(ctx(tenant), TokenEstimate(10, 10, "llama-unknown"))
    assert admission.allowed
    assert allow.stats.unpriced_admissions == 1
    assert allow.spend(tenant)[0].usage == 0
    # without any budget, no price is needed
    assert make(configure(tenant)).admit(ctx(tenant), TokenEstimate(10, 10, "llama-unknown")).allowed


def test_a_budget_period_follows_its_whole_hour_offset(
    make: Any, tenant: uuid.UUID, clock: ManualClock
) -> None:
    # UTC+2: a day ends at 22:00 UTC. The clock stands at 2026-03-31 22:59 UTC (the test's MONTH_END - 1 h),
    # which is already 2026-04-01 00:59 there: that day ends at 2026-04-01 22:00 UTC.
    limits = configure(tenant, budgets=Budgets(day=Budget(limit_micros=10_000, utc_offset_hours=2)))
    client = make(limits, prices=StaticPrices(PRICES))
    assert client.admit(ctx(tenant), TokenEstimate(0, 1000, "gpt-4o")).allowed
    (budget,) = client.spend(tenant)
    local_midnight = MONTH_END + 60 + 22 * 3600  # 2026-04-01 22:00 UTC = 2026-04-02 00:00 UTC+2
    assert budget.reset_at == pytest.approx(local_midnight)
    clock.advance(local_midnight - clock.now() - 1)
    assert not client.admit(ctx(tenant), TokenEstimate(0, 1, "gpt-4o")).allowed
    clock.advance(1)
    assert client.admit(ctx(tenant), TokenEstimate(0, 1, "gpt-4o")).allowed


def test_the_soft_threshold_alerts_once_per_period_under_concurrency(
    make: Any, tenant: uuid.UUID, clock: ManualClock
) -> None:
    alerts: list[BudgetAlert] = []
    limits = configure(tenant, budgets=Budgets(day=Budget(limit_micros=1_000_000, soft_threshold_percent=80)))
    clients = [make(limits, prices=StaticPrices(PRICES), on_budget_alert=alerts.append) for _ in range(4)]

    def spend(client: QuotaClient) -> None:
        for _ in range(30):  # 4 x 30 x 10 000 = 1 200 000 asked; the threshold (800 000) is crossed once
            client.admit(ctx(tenant), TokenEstimate(0, 1000, "gpt-4o"))

    threads = [threading.Thread(target=spend, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(alerts) == 1
    (alert,) = alerts
    assert (alert.name, alert.window, alert.threshold_micros) == ("tenant.spend_per_day", "day", 800_000)
    assert 800_000 <= alert.spent_micros < 810_000
    assert sum(c.stats.budget_alerts for c in clients) == 1
    # headers: the remaining budget, and the warning now that it is past the threshold
    admission = clients[0].admit(ctx(tenant), TokenEstimate(0, 0, "gpt-4o"))
    headers = dict(rate_limit_headers(admission, clock.now()))
    assert headers["x-budget-remaining"] == "0"
    assert "x-budget-warning" in headers
    clock.advance(DAY)  # the next period alerts again, once
    for _ in range(100):
        clients[1].admit(ctx(tenant), TokenEstimate(0, 1000, "gpt-4o"))
    assert len(alerts) == 2


def test_a_settle_that_reaches_the_threshold_alerts(make: Any, tenant: uuid.UUID) -> None:
    alerts: list[BudgetAlert] = []
    limits = configure(
        tenant,
        api_keys={
            "key-1": ApiKeyPolicy(
                budgets=Budgets(month=Budget(limit_micros=100_000, soft_threshold_percent=50))
            )
        },
    )
    client = make(limits, prices=StaticPrices(PRICES), on_budget_alert=alerts.append)
    admission = client.admit(ctx(tenant), TokenEstimate(0, 100, "gpt-4o"))  # 1 000: far below
    assert admission.reservation is not None
    assert not alerts
    settlement = client.settle(admission.reservation, 6000, admission.reservation.cost_of(0, 6000))  # 60 000
    assert [a.name for a in settlement.alerts] == ["api_key.spend_per_month"]
    assert alerts[0].api_key_id == "key-1"
    assert alerts[0].spent_micros == 60_000
    assert alerts[0].remaining_micros == 40_000


def test_static_prices_refuse_bad_prices() -> None:
    with pytest.raises(ValueError):
        StaticPrices({"m": ("-1", "1")})
    with pytest.raises(ValueError):
        StaticPrices({"m": ("NaN", "1")})
    assert StaticPrices({"m": (Decimal("0.5"), 2)}).token_price(uuid.uuid4(), "m") is not None


# -- at the edge ---------------------------------------------------------------------------------------------


async def test_the_middlewares_answer_model_not_allowed_and_insufficient_quota(
    redis_url: str, tenant: uuid.UUID, clock: ManualClock
) -> None:
    import json

    from llmproxy.core import async_redis_from_url
    from llmproxy.quota import AsyncQuotaClient, QuotaMiddleware

    from .test_quota_asgi_middleware import call

    limits = configure(
        tenant,
        budgets=Budgets(day=Budget(limit_micros=12_000, soft_threshold_percent=50)),
        api_keys={"key-1": ApiKeyPolicy(allowed_models=frozenset({"gpt-4o"}))},
    )
    client = AsyncQuotaClient(
        async_redis_from_url(redis_url), limits, clock=clock, prices=StaticPrices(PRICES), deny_cache=False
    )

    def estimate(scope: Any, body: bytes) -> TokenEstimate:
        request = json.loads(body)
        return TokenEstimate(0, request["max_tokens"], request["model"])

    async def app(scope: Any, receive: Any, send: Any) -> None:
        report_usage(input_tokens=0, output_tokens=100)  # cost 1 000 at gpt-4o's price
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    edge = QuotaMiddleware(app, client=client, estimate_tokens=estimate)
    body = json.dumps({"model": "gpt-4o-mini", "max_tokens": 10}).encode()
    status, _, answer = await call(edge, tenant, body, api_key="key-1")
    assert status == 403
    assert json.loads(answer)["error"]["code"] == "model_not_allowed"
    assert json.loads(answer)["error"]["param"] == "model"
    big = json.dumps({"model": "gpt-4o", "max_tokens": 1000}).encode()  # reserves 10 000, settles 1 000
    status, headers, _ = await call(edge, tenant, big, api_key="key-1")
    assert status == 200
    assert headers["x-budget-limit"] == "12000"
    assert headers["x-budget-remaining"] == "2000"
    assert "x-budget-warning" in headers
    assert (await client.spend(tenant))[0].usage == 1000  # settled at the real cost
    for _ in range(2):  # 1 000 + 10 000 and 2 000 + 10 000 fit
        status, headers, answer = await call(edge, tenant, big, api_key="key-1")
        assert status == 200
    status, headers, answer = await call(edge, tenant, big, api_key="key-1")  # 3 000 + 10 000 do not
    error = json.loads(answer)["error"]
    assert status == 429
    assert error["code"] == "insufficient_quota"
    assert "retry-after" in headers
    await client.aclose()


@given(
    st.decimals(min_value=0, max_value=1000, places=9),
    st.decimals(min_value=0, max_value=1000, allow_nan=False, allow_infinity=False),
    st.integers(0, 10**7),
    st.integers(0, 10**7),
)
def test_a_price_costs_what_decimal_arithmetic_says(inp: Decimal, out: Decimal, i: int, o: int) -> None:
    """The integer fast path (prices of at most 9 decimals) and the Decimal one agree, half to even."""
    want = int((i * inp + o * out).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    assert PerMillionTokens(inp, out).tokens_cost_micros(i, o) == want


def test_the_wsgi_middleware_settles_the_real_cost_and_refuses_unallowed_models(
    make: Any, tenant: uuid.UUID
) -> None:
    import json

    from llmproxy.quota import QuotaWSGIMiddleware

    from .test_quota_wsgi_middleware import run

    limits = configure(tenant, budgets=Budgets(day=Budget(limit_micros=100_000)))
    client = make(limits, prices=StaticPrices(PRICES))

    def app(environ: Any, start_response: Any) -> Any:
        report_usage(input_tokens=10, output_tokens=40)  # 25 + 400 = 425 at gpt-4o's price
        start_response("200 OK", [])
        return [b"{}"]

    def estimate(environ: Any, body: bytes) -> TokenEstimate:
        request = json.loads(body)
        return TokenEstimate(10, request["max_tokens"], request["model"])

    edge = QuotaWSGIMiddleware(app, client=client, estimate_tokens=estimate)
    status, headers, _ = run(edge, tenant, json.dumps({"model": "gpt-4o", "max_tokens": 1000}).encode())
    assert status.startswith("200")
    assert headers["x-budget-remaining"] == str(100_000 - 10_025)
    assert client.spend(tenant)[0].usage == 425
    status, _, answer = run(edge, tenant, json.dumps({"model": "mystery", "max_tokens": 1}).encode())
    assert status.startswith("403")
    assert json.loads(answer)["error"]["code"] == "model_not_priced"


async def test_guards_reserve_and_settle_spend(
    make: Any, tenant: uuid.UUID, redis_url: str, clock: ManualClock
) -> None:
    from llmproxy.core import async_redis_from_url
    from llmproxy.quota import AsyncQuotaClient, QuotaExceeded

    limits = configure(tenant, budgets=Budgets(month=Budget(limit_micros=20_000)))
    client = make(limits, prices=StaticPrices(PRICES))
    with client.guard(ctx(tenant), cost=TokenEstimate(0, 1000, "gpt-4o")) as guard:  # reserves 10 000
        assert client.spend(tenant)[0].usage == 10_000
        report_usage(input_tokens=0, output_tokens=300)
    assert guard.admission.reservation is not None
    assert client.spend(tenant)[0].usage == 3000  # the real cost replaced the estimate
    aclient = AsyncQuotaClient(
        async_redis_from_url(redis_url), limits, clock=clock, prices=StaticPrices(PRICES)
    )
    with pytest.raises(QuotaExceeded) as refused:
        async with aclient.guard(ctx(tenant), cost=TokenEstimate(0, 1800, "gpt-4o")):
            pass
    assert refused.value.status == 429
    with pytest.raises(RuntimeError):
        async with aclient.guard(ctx(tenant), cost=TokenEstimate(0, 1000, "gpt-4o")):
            raise RuntimeError("the LLM call failed")
    assert (await aclient.spend(tenant))[0].usage == 3000  # a failed block is charged nothing
    await aclient.aclose()
