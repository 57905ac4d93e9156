"""Metering through a served gateway: the usage endpoint answers what the openai client was told."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openai

from .conftest import GatewayProcess, tenant_admin_token

MESSAGES = [{"role": "user", "content": "Meter me, please."}]


def today(gw: GatewayProcess, tenant_id: str, **params: Any) -> httpx.Response:
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    query = {"start": start.isoformat(), "end": (start + timedelta(days=1)).isoformat(), "granularity": "day"}
    query.update(params)
    return gw.admin("GET", f"/tenants/{tenant_id}/usage", params=query)


def wait_for_requests(gw: GatewayProcess, tenant_id: str, count: int) -> dict[str, Any]:
    """The usage page once it shows ``count`` requests (records leave the gateway within milliseconds)."""
    deadline = time.monotonic() + 10
    while True:
        page = today(gw, tenant_id, group_by="model").json()
        seen = sum(r["num_model_requests"] for b in page["data"] for r in b["results"])
        if seen >= count or time.monotonic() > deadline:
            return dict(page)
        time.sleep(0.05)


def test_the_usage_endpoint_equals_what_the_openai_client_saw(gateway: GatewayProcess) -> None:
    tenant_id = gateway.create_tenant(f"metered-{time.monotonic_ns()}")
    _, key = gateway.issue_key(tenant_id)
    seen_in = seen_out = 0
    with openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=key, max_retries=0) as client:
        for model in ("gpt-4o-mini", "gpt-4o", "gpt-4o-mini"):
            result = client.chat.completions.create(model=model, messages=MESSAGES)
            assert result.usage is not None
            seen_in += result.usage.prompt_tokens
            seen_out += result.usage.completion_tokens
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
        )
        assert chunks[-1].usage is not None
        seen_in += chunks[-1].usage.prompt_tokens
        seen_out += chunks[-1].usage.completion_tokens
    page = wait_for_requests(gateway, tenant_id, 4)
    assert page["object"] == "page"
    (bucket,) = page["data"]
    by_model = {r["model"]: r for r in bucket["results"]}
    assert {m: r["num_model_requests"] for m, r in by_model.items()} == {"gpt-4o-mini": 2, "gpt-4o": 2}
    assert sum(r["input_tokens"] for r in bucket["results"]) == seen_in
    assert sum(r["output_tokens"] for r in bucket["results"]) == seen_out
    assert all(r["cost_micros"] > 0 and r["unpriced_requests"] == 0 for r in bucket["results"])


def test_usage_grouped_by_api_key(gateway: GatewayProcess) -> None:
    tenant_id = gateway.create_tenant(f"keys-{time.monotonic_ns()}")
    key_ids = []
    for name in ("one", "two"):
        key_id, key = gateway.issue_key(tenant_id, name)
        key_ids.append(key_id)
        with openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=key, max_retries=0) as client:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    wait_for_requests(gateway, tenant_id, 2)
    page = today(gateway, tenant_id, group_by="api_key_id").json()
    assert sorted(r["api_key_id"] for r in page["data"][0]["results"]) == sorted(key_ids)


def test_a_bad_usage_query_is_a_400_naming_the_parameter(gateway: GatewayProcess) -> None:
    tenant_id = gateway.create_tenant(f"bad-query-{time.monotonic_ns()}")
    for params, param in (
        ({"granularity": "week"}, "granularity"),
        ({"tz": "Asia/Kolkata"}, "tz"),
        ({"group_by": "colour"}, "group_by"),
        ({"start": "yesterday"}, "start"),
        ({"start": "2026-01-01T00:30:00+00:00", "granularity": "hour"}, "start"),
    ):
        response = today(gateway, tenant_id, **params)
        assert response.status_code == 400, (params, response.text)
        assert response.json()["error"]["param"] == param


def test_a_tenant_admin_reads_their_own_usage_but_not_another_tenants(gateway: GatewayProcess) -> None:
    mine = gateway.create_tenant(f"mine-{time.monotonic_ns()}")
    other = gateway.create_tenant(f"other-{time.monotonic_ns()}")
    headers = {"authorization": f"Bearer {tenant_admin_token(mine)}"}
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    params = {"start": start.isoformat(), "end": (start + timedelta(days=1)).isoformat()}
    own = httpx.get(f"{gateway.base_url}/admin/tenants/{mine}/usage", params=params, headers=headers)
    assert own.status_code == 200
    theirs = httpx.get(f"{gateway.base_url}/admin/tenants/{other}/usage", params=params, headers=headers)
    assert theirs.status_code == 403


def test_a_price_override_changes_the_cost_of_later_requests(gateway: GatewayProcess) -> None:
    tenant_id = gateway.create_tenant(f"priced-{time.monotonic_ns()}")
    _, key = gateway.issue_key(tenant_id)
    body = {"input_per_mtok": "1000", "output_per_mtok": "0"}
    response = gateway.admin("PUT", f"/price-overrides/gpt-4o-mini?tenant_id={tenant_id}", json=body)
    assert response.status_code == 200, response.text
    listed = gateway.admin("GET", f"/price-overrides?tenant_id={tenant_id}").json()
    assert [o["model"] for o in listed] == ["gpt-4o-mini"]
    with openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=key, max_retries=0) as client:
        result = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert result.usage is not None
    page = wait_for_requests(gateway, tenant_id, 1)
    (only,) = page["data"][0]["results"]
    assert only["cost_micros"] == result.usage.prompt_tokens * 1000
    assert gateway.admin("DELETE", f"/price-overrides/gpt-4o-mini?tenant_id={tenant_id}").status_code == 204
    assert gateway.admin("DELETE", f"/price-overrides/gpt-4o-mini?tenant_id={tenant_id}").status_code == 404
    bad = gateway.admin("PUT", "/price-overrides/m", json={"input_per_mtok": "-1", "output_per_mtok": "0"})
    assert bad.status_code == 400


def test_quota_usage_moved_to_the_quota_route(gateway: GatewayProcess) -> None:
    tenant_id = gateway.create_tenant(f"quota-{time.monotonic_ns()}")
    response = gateway.admin("GET", f"/tenants/{tenant_id}/quota")
    assert response.status_code == 200
    assert "tokens_per_day" in response.json()["quotas"]
