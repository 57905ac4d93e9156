"""Per-model limits, key model allow-lists and spend budgets through a served gateway: set with the admin API,
enforced on /v1, reported by GET budgets at metering's price, alerted once per period (audit and metric)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmproxy.core.testing import eventually
from llmproxy.quota import BudgetAlert, TokenEstimate
from llmproxy_gateway import GatewaySettings
from llmproxy_gateway._backends import Backends
from llmproxy_gateway._budget_alerts import BudgetAlerts
from llmproxy_gateway._estimate import MAX_ESTIMATE, token_estimator
from llmproxy_gateway._metering import GatewayMetering

from .conftest import GatewayProcess, start_gateway, tenant_admin_token

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Hello!"}]
GENEROUS: dict[str, Any] = {
    "global_limit": {
        "requests_per_minute": 10_000,
        "requests_per_day": 1_000_000,
        "tokens_per_minute": 10_000_000,
        "tokens_per_day": 100_000_000,
    },
    "api_key_limit": {"requests_per_minute": 10_000, "tokens_per_minute": 10_000_000},
}
#: micro-units of USD per token: what the tests' price override makes gpt-4o-mini cost
INPUT_PRICE, OUTPUT_PRICE = 100, 200
UNPRICED = "house-model"


@pytest.fixture(scope="module", params=["embedded", "real"])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway whose audit consumer runs embedded (so the trail can be read), on either backend; it also
    serves a chat model no price list knows."""
    workdir = tmp_path_factory.mktemp(f"budgets-{request.param}")
    if request.param == "embedded":
        redis_url, database_url = f"memory://gw-{secrets.token_hex(4)}", f"sqlite:///{workdir / 'gateway.db'}"
    else:
        redis_url, database_url = request.getfixturevalue("real_services")
    gateway = start_gateway(
        workdir,
        redis_url=redis_url,
        database_url=database_url,
        audit_consumer="embedded",
        chat_models=json.dumps(["gpt-4o-mini", "gpt-4o", UNPRICED]),
    )
    yield gateway
    gateway.stop()


def fresh_tenant(gw: GatewayProcess, name: str) -> tuple[str, str, str]:
    """``(tenant id, key id, key)`` of a new tenant with generous rate limits."""
    tenant_id = gw.create_tenant(f"{name}-{time.monotonic_ns()}")
    assert gw.admin("PUT", f"/tenants/{tenant_id}/rate-limits", json=GENEROUS).status_code == 200
    key_id, key = gw.issue_key(tenant_id)
    return tenant_id, key_id, key


def chat(gw: GatewayProcess, key: str, model: str = "gpt-4o-mini", **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{gw.base_url}{CHAT}",
        json={"model": model, "messages": HELLO, **extra},
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )


def price_for(gw: GatewayProcess, tenant_id: str) -> None:
    prices = {"input_per_mtok": str(INPUT_PRICE), "output_per_mtok": str(OUTPUT_PRICE)}
    response = gw.admin("PUT", "/price-overrides/gpt-4o-mini", params={"tenant_id": tenant_id}, json=prices)
    assert response.status_code == 200, response.text


def cost(response: httpx.Response) -> int:
    usage = response.json()["usage"]
    return int(usage["prompt_tokens"] * INPUT_PRICE + usage["completion_tokens"] * OUTPUT_PRICE)


def quota_usage(gw: GatewayProcess, tenant_id: str) -> dict[str, int]:
    quotas = gw.admin("GET", f"/tenants/{tenant_id}/quota").json()["quotas"]
    return {name: int(q["current_usage"]) for name, q in quotas.items()}


def budgets(gw: GatewayProcess, tenant_id: str, key_id: str | None = None) -> dict[str, Any]:
    path = f"/tenants/{tenant_id}" + (f"/api-keys/{key_id}" if key_id else "") + "/budgets"
    response = gw.admin("GET", path)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def metered_cost(gw: GatewayProcess, tenant_id: str, requests: int) -> int:
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    params = {
        "start": start.isoformat(),
        "end": (start + timedelta(days=1)).isoformat(),
        "granularity": "day",
    }

    def page() -> dict[str, Any] | None:
        found = gw.admin("GET", f"/tenants/{tenant_id}/usage", params=params).json()
        results = [r for b in found["data"] for r in b["results"]]
        return found if sum(r["num_model_requests"] for r in results) >= requests else None

    return sum(r["cost_micros"] for b in eventually(page)["data"] for r in b["results"])


def trail(gw: GatewayProcess, tenant_id: str, expected: int, **params: Any) -> list[dict[str, Any]]:
    def events() -> list[dict[str, Any]] | None:
        response = gw.admin("GET", f"/tenants/{tenant_id}/audit", params={"limit": 1000, **params})
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()["events"]
        return found if len(found) >= expected else None

    return eventually(events, timeout=30)


def drain_until_refused(gw: GatewayProcess, key: str, limit: int = 40) -> list[httpx.Response]:
    """Chat (max_tokens 20) until a request is refused; every answer, the refusal last."""
    answers = []
    for _ in range(limit):
        answers.append(chat(gw, key, max_tokens=20))
        if answers[-1].status_code != 200:
            return answers
    raise AssertionError(f"never refused in {limit} requests")


# -- per-model limits and key allow-lists -------------------------------------------------------------------


def test_a_model_limit_refuses_that_model_while_another_still_works(gw: GatewayProcess) -> None:
    tenant_id, _, key = fresh_tenant(gw, "model-limit")
    limits = {**GENEROUS, "model_limits": {"gpt-4o": {"requests_per_minute": 2}}}
    assert gw.admin("PUT", f"/tenants/{tenant_id}/rate-limits", json=limits).status_code == 200
    assert [chat(gw, key, "gpt-4o").status_code for _ in range(2)] == [200, 200]
    refused = chat(gw, key, "gpt-4o")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "model[gpt-4o].requests_per_minute" in refused.json()["error"]["message"]
    assert int(refused.headers["retry-after"]) >= 1
    assert chat(gw, key, "gpt-4o-mini").status_code == 200


def test_a_key_restricted_to_a_model_gets_403_for_another_and_consumes_nothing(gw: GatewayProcess) -> None:
    tenant_id, key_id, key = fresh_tenant(gw, "allow-list")
    _, other_key = gw.issue_key(tenant_id, "unrestricted")
    body = {"allowed_models": ["gpt-4o-mini"]}
    response = gw.admin("PUT", f"/tenants/{tenant_id}/api-keys/{key_id}/models", json=body)
    assert response.status_code == 200, response.text
    assert chat(gw, key).status_code == 200
    before = quota_usage(gw, tenant_id)

    refused = chat(gw, key, "gpt-4o")

    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "model_not_allowed"
    assert refused.json()["error"]["param"] == "model"
    assert quota_usage(gw, tenant_id) == before
    assert chat(gw, other_key, "gpt-4o").status_code == 200  # the restriction is the key's alone


def test_the_model_allow_list_round_trips_and_null_allows_every_model(gw: GatewayProcess) -> None:
    tenant_id, key_id, key = fresh_tenant(gw, "allow-list-round-trip")
    path = f"/tenants/{tenant_id}/api-keys/{key_id}/models"
    assert gw.admin("GET", path).json()["allowed_models"] is None
    put = gw.admin("PUT", path, json={"allowed_models": ["gpt-4o-mini", "a-model", "gpt-4o-mini"]})
    assert put.status_code == 200, put.text
    assert put.json()["allowed_models"] == ["a-model", "gpt-4o-mini"]
    got = gw.admin("GET", path).json()
    assert got == {"tenant_id": tenant_id, "api_key_id": key_id, "allowed_models": ["a-model", "gpt-4o-mini"]}
    policies = gw.admin("GET", f"/tenants/{tenant_id}/rate-limits").json()["api_keys"]
    assert policies[key_id]["allowed_models"] == ["a-model", "gpt-4o-mini"]
    assert chat(gw, key, "gpt-4o").status_code == 403
    assert gw.admin("PUT", path, json={"allowed_models": None}).status_code == 200
    assert gw.admin("GET", path).json()["allowed_models"] is None
    assert chat(gw, key, "gpt-4o").status_code == 200


# -- spend budgets ------------------------------------------------------------------------------------------


def test_a_budget_set_by_the_admin_api_is_enforced_and_its_spend_is_the_metered_cost(
    gw: GatewayProcess,
) -> None:
    tenant_id, _, key = fresh_tenant(gw, "budget")
    price_for(gw, tenant_id)
    budget = {"limit_micros": 20_000, "soft_threshold_percent": 50}
    put = gw.admin("PUT", f"/tenants/{tenant_id}/budgets/day", json=budget)
    assert put.status_code == 200, put.text
    assert put.json() == {**budget, "utc_offset_hours": 0, "currency": "USD"}

    answers = drain_until_refused(gw, key)

    *admitted, refused = answers
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert refused.json()["error"]["type"] == "insufficient_quota"
    assert "tenant.spend_per_day" in refused.json()["error"]["message"]
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    assert abs(int(refused.headers["retry-after"]) - (midnight - datetime.now(UTC)).total_seconds()) < 60
    spent = sum(cost(a) for a in admitted)
    assert spent <= 20_000

    def settled() -> dict[str, Any] | None:
        day = budgets(gw, tenant_id)["day"]
        return day if day["spend"]["spent_micros"] == spent else None

    day = eventually(settled)
    assert day["budget"]["limit_micros"] == 20_000
    assert day["spend"]["name"] == "tenant.spend_per_day"
    assert day["spend"]["remaining_micros"] == 20_000 - spent
    assert day["spend"]["soft_threshold_reached"] is True
    assert datetime.fromisoformat(day["spend"]["reset_at"]) == midnight
    assert metered_cost(gw, tenant_id, len(admitted)) == spent


def test_budget_headers_and_exactly_one_threshold_event_per_period(gw: GatewayProcess) -> None:
    tenant_id, _, key = fresh_tenant(gw, "threshold")
    price_for(gw, tenant_id)
    budget = {"limit_micros": 30_000, "soft_threshold_percent": 25}
    assert gw.admin("PUT", f"/tenants/{tenant_id}/budgets/month", json=budget).status_code == 200

    answers = drain_until_refused(gw, key)

    first, *_ = answers
    assert first.headers["x-budget-limit"] == "30000"
    assert 0 < int(first.headers["x-budget-remaining"]) < 30_000
    assert first.headers["x-budget-reset"].endswith("s")
    assert "x-budget-warning" not in first.headers
    warned = [a for a in answers if "x-budget-warning" in a.headers]
    assert len(warned) >= 2  # every response past the threshold says so...
    assert "tenant.spend_per_month" in warned[0].headers["x-budget-warning"]
    # ... but the trail has one event for the period
    (event,) = trail(gw, tenant_id, 1, action="budget.threshold_reached")
    time.sleep(0.5)  # anything raised later would have been stored by now
    assert len(trail(gw, tenant_id, 1, action="budget.threshold_reached")) == 1
    assert event["entity_type"] == "budget"
    assert event["entity_id"] == "tenant.spend_per_month"
    assert event["actor_type"] == "system"
    assert event["tenant_id"] == tenant_id
    values = event["new_values"]
    assert values["limit_micros"] == 30_000
    assert values["threshold_micros"] == 7_500
    assert values["spent_micros"] >= 7_500
    assert datetime.fromisoformat(values["reset_at"]).day == 1


def test_the_threshold_is_counted_as_a_metric(gw: GatewayProcess) -> None:
    tenant_id, _, key = fresh_tenant(gw, "metric")
    price_for(gw, tenant_id)
    budget = {"limit_micros": 10_000}  # (the second request reaches 80 %)
    assert gw.admin("PUT", f"/tenants/{tenant_id}/budgets/day", json=budget).status_code == 200
    drain_until_refused(gw, key)
    scrape = httpx.get(f"{gw.base_url}/metrics", timeout=10)
    samples = [
        sample
        for family in text_string_to_metric_families(scrape.text)
        for sample in family.samples
        if sample.name == "llmproxy_budget_threshold_reached_total"
    ]
    day = [s for s in samples if s.labels == {"llmproxy_budget_name": "tenant.spend_per_day",
                                                "llmproxy_budget_window": "day"}]  # fmt: skip
    assert day
    assert day[0].value >= 1


def test_a_keys_own_budget_refuses_that_key_only(gw: GatewayProcess) -> None:
    tenant_id, key_id, key = fresh_tenant(gw, "key-budget")
    _, other_key = gw.issue_key(tenant_id, "other")
    price_for(gw, tenant_id)
    path = f"/tenants/{tenant_id}/api-keys/{key_id}/budgets/day"
    assert gw.admin("PUT", path, json={"limit_micros": 10_000}).status_code == 200

    *admitted, refused = drain_until_refused(gw, key)

    assert refused.status_code == 429
    assert "api_key.spend_per_day" in refused.json()["error"]["message"]
    assert chat(gw, other_key).status_code == 200
    spent = sum(cost(a) for a in admitted)

    def settled() -> dict[str, Any] | None:
        found = budgets(gw, tenant_id, key_id)
        return found if found["day"]["spend"]["spent_micros"] == spent else None

    found = eventually(settled)
    assert found["api_key_id"] == key_id
    assert found["day"]["spend"]["name"] == "api_key.spend_per_day"
    assert budgets(gw, tenant_id)["day"] is None  # the tenant itself has no budget


def test_an_unpriced_model_under_a_budget_is_403_model_not_priced(gw: GatewayProcess) -> None:
    tenant_id, _, key = fresh_tenant(gw, "unpriced")
    assert chat(gw, key, UNPRICED).status_code == 200  # no budget: no price needed
    assert (
        gw.admin("PUT", f"/tenants/{tenant_id}/budgets/day", json={"limit_micros": 10**9}).status_code == 200
    )
    refused = chat(gw, key, UNPRICED)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "model_not_priced"


def test_a_deleted_budget_no_longer_applies_and_deleting_it_again_is_404(gw: GatewayProcess) -> None:
    tenant_id, _, key = fresh_tenant(gw, "delete-budget")
    price_for(gw, tenant_id)
    assert gw.admin("PUT", f"/tenants/{tenant_id}/budgets/day", json={"limit_micros": 0}).status_code == 200
    assert chat(gw, key).status_code == 429
    assert gw.admin("DELETE", f"/tenants/{tenant_id}/budgets/day").status_code == 204
    assert budgets(gw, tenant_id)["day"] is None
    assert chat(gw, key).status_code == 200
    again = gw.admin("DELETE", f"/tenants/{tenant_id}/budgets/day")
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "budget_not_found"


# -- the admin API ------------------------------------------------------------------------------------------


def test_the_whole_configuration_round_trips_through_rate_limits(gw: GatewayProcess) -> None:
    tenant_id, key_id, _ = fresh_tenant(gw, "round-trip")
    day = {"limit_micros": 5_000_000, "soft_threshold_percent": 90, "utc_offset_hours": -5, "currency": "USD"}
    month = {
        "limit_micros": 100_000_000,
        "soft_threshold_percent": 80,
        "utc_offset_hours": 0,
        "currency": "USD",
    }
    body = {
        **GENEROUS,
        "endpoint_limits": {"/v1/embeddings": {"requests_per_minute": 5, "tokens_per_minute": 50,
                                               "burst_capacity": 5}},
        "model_limits": {
            "gpt-4o": {"requests_per_minute": 10, "tokens_per_minute": None, "tokens_per_day": 1_000_000},
        },
        "budgets": {"day": day, "month": month},
        "api_keys": {key_id: {"allowed_models": ["gpt-4o", "gpt-4o-mini"],
                              "budgets": {"day": day, "month": None}}},
    }  # fmt: skip
    put = gw.admin("PUT", f"/tenants/{tenant_id}/rate-limits", json=body)
    assert put.status_code == 200, put.text
    got = gw.admin("GET", f"/tenants/{tenant_id}/rate-limits").json()
    assert got.pop("tenant_id") == tenant_id
    assert got.pop("source") in {"database", "l1", "redis"}
    assert got == body
    assert gw.admin("GET", f"/tenants/{tenant_id}/budgets").json()["day"]["budget"] == day
    key_budgets = gw.admin("GET", f"/tenants/{tenant_id}/api-keys/{key_id}/budgets").json()
    assert key_budgets["day"]["budget"] == day
    assert key_budgets["month"] is None
    models = gw.admin("GET", f"/tenants/{tenant_id}/api-keys/{key_id}/models").json()
    assert models["allowed_models"] == ["gpt-4o", "gpt-4o-mini"]


def test_a_budget_write_keeps_the_rest_of_the_configuration(gw: GatewayProcess) -> None:
    tenant_id, key_id, _ = fresh_tenant(gw, "keep-the-rest")
    limits = {**GENEROUS, "model_limits": {"gpt-4o": {"requests_per_minute": 7}}}
    assert gw.admin("PUT", f"/tenants/{tenant_id}/rate-limits", json=limits).status_code == 200
    assert gw.admin("PUT", f"/tenants/{tenant_id}/budgets/month", json={"limit_micros": 9}).status_code == 200
    path = f"/tenants/{tenant_id}/api-keys/{key_id}"
    assert gw.admin("PUT", f"{path}/models", json={"allowed_models": ["gpt-4o"]}).status_code == 200
    assert gw.admin("PUT", f"{path}/budgets/day", json={"limit_micros": 8}).status_code == 200
    got = gw.admin("GET", f"/tenants/{tenant_id}/rate-limits").json()
    assert got["model_limits"] == {"gpt-4o": {"requests_per_minute": 7, "tokens_per_minute": None,
                                              "tokens_per_day": None}}  # fmt: skip
    assert got["global_limit"] == GENEROUS["global_limit"]
    assert got["budgets"]["month"]["limit_micros"] == 9
    assert got["api_keys"][key_id]["allowed_models"] == ["gpt-4o"]
    assert got["api_keys"][key_id]["budgets"]["day"]["limit_micros"] == 8


def test_budget_changes_are_audited_with_old_and_new_values(gw: GatewayProcess) -> None:
    tenant_id, key_id, _ = fresh_tenant(gw, "audited-budget")
    assert gw.admin("PUT", f"/tenants/{tenant_id}/budgets/day", json={"limit_micros": 1}).status_code == 200
    assert gw.admin("PUT", f"/tenants/{tenant_id}/budgets/day", json={"limit_micros": 2}).status_code == 200
    assert gw.admin("DELETE", f"/tenants/{tenant_id}/budgets/day").status_code == 204
    models = {"allowed_models": ["gpt-4o"]}
    assert gw.admin("PUT", f"/tenants/{tenant_id}/api-keys/{key_id}/models", json=models).status_code == 200
    events = trail(gw, tenant_id, 3, entity_type="budget")
    assert [e["action"] for e in events] == ["budget.delete", "budget.update", "budget.update"]
    assert [(e["old_values"] or {}).get("limit_micros") for e in events] == [2, 1, None]
    assert [(e["new_values"] or {}).get("limit_micros") for e in events] == [None, 2, 1]
    assert {e["entity_id"] for e in events} == {"tenant.spend_per_day"}
    assert all(e["actor_type"] == "platform_admin" for e in events)
    (change,) = trail(gw, tenant_id, 1, action="api_key.models_update")
    assert change["entity_id"] == key_id
    assert change["old_values"] == {"allowed_models": None}
    assert change["new_values"] == {"allowed_models": ["gpt-4o"]}


BAD_BUDGETS = [
    ({"limit_micros": -1}, "limit_micros"),
    ({"limit_micros": 1, "currency": "EUR"}, "currency"),
    ({"limit_micros": 1, "colour": "red"}, "colour"),
    ({"limit_micros": 1, "soft_threshold_percent": 0}, "soft_threshold_percent"),
    ({"limit_micros": 1, "utc_offset_hours": 15}, "utc_offset_hours"),
    ({"limit_micros": 1.5}, "limit_micros"),
    ({"limit_micros": "1"}, "limit_micros"),
    ({}, "limit_micros"),
]


def stored(gw: GatewayProcess, tenant_id: str) -> dict[str, Any]:
    found = gw.admin("GET", f"/tenants/{tenant_id}/rate-limits").json()
    found.pop("source")
    return dict(found)


@pytest.mark.parametrize(("body", "param"), BAD_BUDGETS)
def test_a_bad_budget_is_400_naming_the_field_and_writes_nothing(
    gw: GatewayProcess, body: dict[str, Any], param: str
) -> None:
    tenant_id, key_id, _ = fresh_tenant(gw, "bad-budget")
    before = stored(gw, tenant_id)
    for path in (
        f"/tenants/{tenant_id}/budgets/day",
        f"/tenants/{tenant_id}/api-keys/{key_id}/budgets/month",
    ):
        response = gw.admin("PUT", path, json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param
        assert param in response.json()["error"]["message"]
    assert stored(gw, tenant_id) == before


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"allowed_models": ["x" * 10_000]}, "allowed_models.0"),
        ({"allowed_models": ["gpt-4o", "has space"]}, "allowed_models.1"),
        ({"allowed_models": [""]}, "allowed_models.0"),
        ({"allowed_models": "gpt-4o"}, "allowed_models"),
        ({}, "allowed_models"),
        ({"allowed_models": None, "extra": 1}, "extra"),
    ],
)
def test_a_bad_model_allow_list_is_400_naming_the_field_and_writes_nothing(
    gw: GatewayProcess, body: dict[str, Any], param: str
) -> None:
    tenant_id, key_id, _ = fresh_tenant(gw, "bad-models")
    before = stored(gw, tenant_id)
    response = gw.admin("PUT", f"/tenants/{tenant_id}/api-keys/{key_id}/models", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert stored(gw, tenant_id) == before


def test_bad_model_limits_and_key_policies_are_400_and_write_nothing(gw: GatewayProcess) -> None:
    tenant_id, key_id, _ = fresh_tenant(gw, "bad-config")
    before = stored(gw, tenant_id)
    long_name = "m" * 10_000
    for extra, param_start in (
        ({"model_limits": {long_name: {"requests_per_minute": 1}}}, "model_limits.mmm"),
        (
            {"model_limits": {"gpt-4o": {"requests_per_minute": -1}}},
            "model_limits.gpt-4o.requests_per_minute",
        ),
        ({"model_limits": {"gpt-4o": {"requests_per_hour": 1}}}, "model_limits.gpt-4o.requests_per_hour"),
        ({"budgets": {"week": {"limit_micros": 1}}}, "budgets.week"),
        ({"budgets": {"day": {"limit_micros": 1, "currency": "EUR"}}}, "budgets.day.currency"),
        ({"api_keys": {"not-a-uuid": {}}}, "api_keys.not-a-uuid"),
        ({"api_keys": {key_id: {"allowed_models": [long_name]}}}, f"api_keys.{key_id}.allowed_models.0"),
        ({"api_keys": {str(uuid.uuid4()): {"allowed_models": ["gpt-4o"]}}}, "api_keys."),
    ):
        response = gw.admin("PUT", f"/tenants/{tenant_id}/rate-limits", json={**GENEROUS, **extra})
        assert response.status_code == 400, (extra, response.text)
        error = response.json()["error"]
        assert error["param"].startswith(param_start), error
        assert len(error["param"]) <= 200  # a 10 kB name is not echoed
        assert len(error["message"]) < 1000
    assert stored(gw, tenant_id) == before


def test_a_key_of_another_tenant_is_404_on_every_key_route(gw: GatewayProcess) -> None:
    tenant_id, _, _ = fresh_tenant(gw, "mine")
    _, foreign_key, _ = fresh_tenant(gw, "theirs")
    path = f"/tenants/{tenant_id}/api-keys/{foreign_key}"
    for method, suffix, body in (
        ("GET", "/budgets", None),
        ("PUT", "/budgets/day", {"limit_micros": 1}),
        ("DELETE", "/budgets/day", None),
        ("GET", "/models", None),
        ("PUT", "/models", {"allowed_models": ["gpt-4o"]}),
    ):
        response = gw.admin(method, path + suffix, json=body)
        assert response.status_code == 404, (method, suffix, response.text)
        assert response.json()["error"]["code"] == "api_key_not_found"


def test_a_tenant_admin_reads_their_budgets_but_cannot_change_them(gw: GatewayProcess) -> None:
    tenant_id, key_id, _ = fresh_tenant(gw, "tenant-admin")
    other, _, _ = fresh_tenant(gw, "tenant-admin-other")
    headers = {"authorization": f"Bearer {tenant_admin_token(tenant_id)}"}
    base = f"{gw.base_url}/admin/tenants"
    assert httpx.get(f"{base}/{tenant_id}/budgets", headers=headers).status_code == 200
    assert httpx.get(f"{base}/{tenant_id}/api-keys/{key_id}/models", headers=headers).status_code == 200
    assert httpx.get(f"{base}/{other}/budgets", headers=headers).status_code == 403
    put = httpx.put(f"{base}/{tenant_id}/budgets/day", json={"limit_micros": 10**12}, headers=headers)
    assert put.status_code == 403
    models = httpx.put(
        f"{base}/{tenant_id}/api-keys/{key_id}/models", json={"allowed_models": None}, headers=headers
    )
    assert models.status_code == 403
    assert budgets(gw, tenant_id)["day"] is None


# -- in the process: the estimate and the wiring ----------------------------------------------------------

CHAT_SCOPE = {"type": "http", "method": "POST", "path": CHAT}
EMBEDDINGS_SCOPE = {"type": "http", "method": "POST", "path": "/v1/embeddings"}


def test_a_chat_estimate_splits_prompt_and_output_and_names_the_model() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 7}
    estimate = token_estimator(256)(CHAT_SCOPE, json.dumps(body).encode())
    assert isinstance(estimate, TokenEstimate)
    assert estimate.model == "gpt-4o"
    assert estimate.output_tokens == 7
    assert estimate.input_tokens > 0
    without_max = token_estimator(256)(CHAT_SCOPE, json.dumps({**body, "max_tokens": None}).encode())
    assert isinstance(without_max, TokenEstimate)
    assert without_max.output_tokens == 256


def test_an_embeddings_estimate_has_no_output() -> None:
    body = {"model": "text-embedding-3-small", "input": ["a b", "c"]}
    estimate = token_estimator(256)(EMBEDDINGS_SCOPE, json.dumps(body).encode())
    assert estimate == TokenEstimate(estimate.input_tokens, 0, "text-embedding-3-small")
    assert estimate.input_tokens > 0


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"text"'])
def test_a_body_that_is_not_a_json_object_estimates_zero(body: bytes) -> None:
    assert token_estimator(256)(CHAT_SCOPE, body) == 0


def test_an_estimate_is_bounded_and_a_model_that_is_not_a_string_is_left_out() -> None:
    body = {"model": 42, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**30}
    estimate = token_estimator(256)(CHAT_SCOPE, json.dumps(body).encode())
    assert isinstance(estimate, TokenEstimate)
    assert estimate.model is None
    assert estimate.total == MAX_ESTIMATE


def test_metering_and_quota_share_one_price_book_and_the_unpriced_rule_is_a_setting(tmp_path: Any) -> None:
    settings = GatewaySettings(
        redis_url=f"memory://wiring-{secrets.token_hex(4)}",
        database_url=f"sqlite:///{tmp_path / 'wiring.db'}",
        quota_unpriced_models="allow",
    )
    backends = Backends.from_settings(settings)
    metering = GatewayMetering.from_backends(backends)
    try:
        assert backends.quota.options.prices is backends.prices
        assert metering.client.prices is backends.prices
        assert backends.quota.options.unpriced == "allow"
        assert backends.quota.options.on_budget_alert is backends.budget_alerts
        assert GatewaySettings().quota_unpriced_models == "deny"
    finally:
        asyncio.run(backends.aclose())


def test_a_budget_alert_is_counted_without_an_audit_publisher_and_never_raises() -> None:
    class Broken:
        def publish(self, *args: Any, **kwargs: Any) -> bool:
            raise RuntimeError("the trail is down")

    alert = BudgetAlert(
        tenant_id=str(uuid.uuid4()), api_key_id=None, name="tenant.spend_per_day", window="day",
        limit_micros=10, threshold_micros=8, spent_micros=9, reset_at=time.time() + 60,
    )  # fmt: skip
    alerts = BudgetAlerts()
    alerts(alert)  # no publisher bound (``without=audit`` elsewhere): the metric only
    alerts.bind_audit(Broken())
    alerts(alert)  # logged, not raised
