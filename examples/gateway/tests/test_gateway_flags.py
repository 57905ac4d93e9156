"""Feature flags in the gateway: /v1/ and streaming gated per tenant, the flags admin API, two processes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmproxy.core.testing import Backend

from .conftest import GatewayProcess, start_gateway, tenant_admin_token

HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello!"}]}
OTHER_TENANT = "00000000-0000-4000-8000-0000000000ff"


def chat(gw: GatewayProcess, *, stream: bool = False) -> httpx.Response:
    headers = {"authorization": f"Bearer {gw.api_key}"}
    return httpx.post(
        f"{gw.base_url}/v1/chat/completions", json={**HELLO, "stream": stream}, headers=headers, timeout=10
    )


@pytest.fixture
def clean_flags(gateway: GatewayProcess) -> Iterator[GatewayProcess]:
    """The module's gateway, with every flag definition removed afterwards (the defaults apply again)."""
    yield gateway
    for flag in gateway.admin("GET", "/flags").json()["flags"]:
        assert gateway.admin("DELETE", f"/flags/{flag['key']}").status_code == 204


def test_with_no_definitions_the_api_and_streaming_are_on(clean_flags: GatewayProcess) -> None:
    assert chat(clean_flags).status_code == 200
    assert chat(clean_flags, stream=True).status_code == 200


def test_llm_gateway_off_for_a_tenant_answers_403_on_v1(clean_flags: GatewayProcess) -> None:
    gw = clean_flags
    put = gw.admin("PUT", "/flags/llm_gateway/simple", json={"enabled_for_tenants": [OTHER_TENANT]})
    assert put.status_code == 200, put.text
    assert put.json()["version"] == 1
    refused = chat(gw)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "feature_disabled"
    assert gw.admin("GET", "/tenants").status_code == 200  # the admin API is not gated
    allowed = gw.admin("PUT", "/flags/llm_gateway/simple", json={"enabled_for_tenants": [gw.tenant_id]})
    assert allowed.json()["version"] == 2
    assert chat(gw).status_code == 200


def test_streaming_off_refuses_a_stream_with_a_clear_4xx_and_serves_plain_requests(
    clean_flags: GatewayProcess,
) -> None:
    gw = clean_flags
    assert gw.admin("PUT", "/flags/streaming/simple", json={"default_value": False}).status_code == 200
    refused = chat(gw, stream=True)
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/json")  # an error, not a broken stream
    assert refused.json()["error"]["code"] == "feature_disabled"
    assert refused.json()["error"]["param"] == "stream"
    assert chat(gw).status_code == 200


@pytest.mark.parametrize(
    ("definition", "param"),
    [
        (
            {
                "strategies": [
                    {
                        "name": "default",
                        "constraints": [{"contextName": "a", "operator": "LIKE", "values": ["x"]}],
                    }
                ]
            },
            "operator",
        ),
        ({"variants": [{"name": "a", "weight": 500}, {"name": "b", "weight": 400}]}, "variants"),
        (
            {
                "strategies": [
                    {
                        "name": "default",
                        "constraints": [{"contextName": "a", "operator": "REGEX", "value": "(?=x)"}],
                    }
                ]
            },
            "constraints",
        ),
        (
            {
                "strategies": [
                    {
                        "name": "default",
                        "constraints": [{"contextName": "a", "operator": "IN", "values": ["1"]}] * 31,
                    }
                ]
            },
            "constraints",
        ),
        ({"dependencies": [{"feature": "no-such-flag"}]}, "dependencies"),
    ],
    ids=[
        "unknown-operator",
        "weights-not-summing",
        "regex-not-compiling",
        "too-many-constraints",
        "missing-parent",
    ],
)
def test_a_bad_definition_is_a_400_naming_the_field_and_nothing_is_written(
    clean_flags: GatewayProcess, definition: dict[str, Any], param: str
) -> None:
    before = clean_flags.admin("GET", "/flags").json()["served_version"]
    response = clean_flags.admin("PUT", "/flags/bad", json=definition)
    assert response.status_code == 400, response.text
    assert param in (response.json()["error"]["param"] or "")
    assert clean_flags.admin("GET", "/flags/bad").status_code == 404
    assert clean_flags.admin("GET", "/flags").json()["served_version"] == before


def test_ten_thousand_constraints_never_reach_the_store(clean_flags: GatewayProcess) -> None:
    many = [{"contextName": "a", "operator": "IN", "values": ["1"]}] * 10_000
    response = clean_flags.admin(
        "PUT", "/flags/huge", json={"strategies": [{"name": "default", "constraints": many}]}
    )
    assert response.status_code in (400, 413)
    assert clean_flags.admin("GET", "/flags/huge").status_code == 404


def test_an_unleash_definition_round_trips_with_versions_and_who_wrote_it(
    clean_flags: GatewayProcess,
) -> None:
    definition = {
        "description": "gpt models only",
        "strategies": [
            {
                "name": "flexibleRollout",
                "parameters": {"rollout": "100", "stickiness": "tenant_id", "groupId": "gpt-only"},
                "constraints": [{"contextName": "model", "operator": "STR_STARTS_WITH", "values": ["gpt-"]}],
            }
        ],
    }
    created = clean_flags.admin("PUT", "/flags/gpt-only", json=definition)
    assert created.status_code == 200, created.text
    stale = clean_flags.admin("PUT", "/flags/gpt-only", json=definition, params={"expected_version": 0})
    assert stale.status_code == 409
    stored = clean_flags.admin("GET", "/flags/gpt-only").json()
    assert stored["version"] == 1
    assert stored["updated_by"] == "platform-admin"
    assert stored["definition"]["strategies"][0]["constraints"][0]["values"] == ["gpt-"]
    tenant = clean_flags.tenant_id
    evaluated = clean_flags.admin("GET", f"/tenants/{tenant}/flags", params={"model": "gpt-4o"}).json()
    assert evaluated["flags"]["gpt-only"]["enabled"] is True
    evaluated = clean_flags.admin("GET", f"/tenants/{tenant}/flags", params={"model": "claude"}).json()
    assert evaluated["flags"]["gpt-only"]["enabled"] is False
    assert evaluated["flags"]["llm_gateway"]["enabled"] is True  # a default shows too


def test_a_tenant_admin_reads_their_own_evaluated_flags_only(clean_flags: GatewayProcess) -> None:
    gw = clean_flags
    own = httpx.get(
        f"{gw.base_url}/admin/tenants/{gw.tenant_id}/flags",
        headers={"authorization": f"Bearer {tenant_admin_token(gw.tenant_id)}"},
        timeout=10,
    )
    assert own.status_code == 200
    assert set(own.json()["flags"]) >= {"llm_gateway", "streaming"}
    other = httpx.get(
        f"{gw.base_url}/admin/tenants/{gw.tenant_id}/flags",
        headers={"authorization": f"Bearer {tenant_admin_token(OTHER_TENANT)}"},
        timeout=10,
    )
    assert other.status_code == 403
    writes = httpx.put(
        f"{gw.base_url}/admin/flags/x/simple",
        json={},
        headers={"authorization": f"Bearer {tenant_admin_token(gw.tenant_id)}"},
        timeout=10,
    )
    assert writes.status_code == 403


def test_the_flags_admin_api_is_in_the_openapi_document(gateway: GatewayProcess) -> None:
    paths = httpx.get(f"{gateway.base_url}/openapi.json", timeout=10).json()["paths"]
    assert {
        "/admin/flags",
        "/admin/flags/{key}",
        "/admin/flags/{key}/simple",
        "/admin/tenants/{tenant_id}/flags",
    } <= set(paths)


@pytest.fixture
def two_gateways(real_backend: Backend, tmp_path: Path) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    urls = {"redis_url": real_backend.redis_url, "database_url": real_backend.database_url}
    first = start_gateway(tmp_path, name="gw1", **urls)
    second = start_gateway(tmp_path, name="gw2", admin_token=first.admin_token, **urls)
    try:
        first.provision()
        second.api_key, second.tenant_id = first.api_key, first.tenant_id
        yield first, second
    finally:
        first.stop()
        second.stop()


def seconds_until(condition: Callable[[], bool], deadline: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started <= deadline:
        if condition():
            return time.monotonic() - started
        time.sleep(0.02)
    return None


@pytest.mark.real
@pytest.mark.slow
def test_a_flag_changed_on_one_process_applies_on_both_within_a_second(
    two_gateways: tuple[GatewayProcess, GatewayProcess],
) -> None:
    first, second = two_gateways
    assert chat(second).status_code == 200
    assert (
        first.admin("PUT", "/flags/llm_gateway/simple", json={"globally_enabled": False}).status_code == 200
    )
    took = seconds_until(lambda: chat(second).status_code == 403, deadline=1.0)
    assert took is not None, "the other process still serves the old flag after 1 s"
    assert first.admin("DELETE", "/flags/llm_gateway").status_code == 204
    assert seconds_until(lambda: chat(second).status_code == 200, deadline=1.0) is not None
