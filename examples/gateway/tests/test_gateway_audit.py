"""The gateway's audit trail: admin mutations with old and new values (never a secret), llm_request_completed
for the API, and ``GET /admin/tenants/{id}/audit`` with its policy, filters and pagination."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import GatewayProcess, start_gateway, tenant_admin_token

PROMPT = "the audit must never hold this prompt"
RATE_LIMITS = {
    "global_limit": {
        "requests_per_minute": 5000,
        "requests_per_day": 1_000_000,
        "tokens_per_minute": 2_000_000,
        "tokens_per_day": 100_000_000,
    },
    "api_key_limit": {"requests_per_minute": 1000, "tokens_per_minute": 500_000},
    "endpoint_limits": {},
}


@pytest.fixture(scope="module", params=["embedded", "real"])
def audited(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A gateway with its consumer embedded, after a round of admin changes and one chat completion."""
    workdir = tmp_path_factory.mktemp(f"audit-{request.param}")
    if request.param == "embedded":
        redis_url, database_url = f"memory://gw-{secrets.token_hex(4)}", f"sqlite:///{workdir / 'gateway.db'}"
    else:
        redis_url, database_url = request.getfixturevalue("real_services")
    gateway = start_gateway(
        workdir, redis_url=redis_url, database_url=database_url, audit_consumer="embedded"
    )
    gateway.provision(f"audited-{secrets.token_hex(3)}")
    key_id, secret = gateway.issue_key(gateway.tenant_id, "second")
    assert (
        gateway.admin("PUT", f"/tenants/{gateway.tenant_id}/rate-limits", json=RATE_LIMITS).status_code == 200
    )
    assert gateway.admin("DELETE", f"/tenants/{gateway.tenant_id}/api-keys/{key_id}").status_code == 204
    chat = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {gateway.api_key}"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}]},
        timeout=10,
    )
    assert chat.status_code == 200, chat.text
    yield {"gateway": gateway, "key_id": key_id, "secret": secret}
    gateway.stop()


def trail(gateway: GatewayProcess, expected: int, **params: Any) -> list[dict[str, Any]]:
    """Every event of the gateway's tenant, once the embedded consumer has stored ``expected`` of them."""
    import time

    deadline = time.monotonic() + 30
    while True:
        response = gateway.admin(
            "GET", f"/tenants/{gateway.tenant_id}/audit", params={"limit": 1000, **params}
        )
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        if len(events) >= expected or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


def by_action(events: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [e for e in events if e["action"] == action]


def test_every_admin_mutation_and_the_completion_are_in_the_trail(audited: dict[str, Any]) -> None:
    events = trail(audited["gateway"], 6)
    actions = sorted(e["action"] for e in events)
    assert actions == sorted(
        ["tenant.create", "api_key.issue", "api_key.issue", "rate_limits.update", "api_key.revoke",
         "llm_request_completed"]
    )  # fmt: skip


def test_the_trail_never_holds_a_secret_or_the_prompt(audited: dict[str, Any]) -> None:
    gateway = audited["gateway"]
    text = json.dumps(trail(gateway, 6))
    assert audited["secret"] not in text
    assert gateway.api_key not in text
    assert PROMPT not in text


def test_admin_changes_carry_the_actor_and_old_and_new_values(audited: dict[str, Any]) -> None:
    events = trail(audited["gateway"], 6)
    (update,) = by_action(events, "rate_limits.update")
    assert update["actor_type"] == "platform_admin"
    assert update["old_values"]["global_limit"]["requests_per_minute"] == 1000  # the defaults
    assert update["new_values"]["global_limit"]["requests_per_minute"] == 5000
    (revoke,) = by_action(events, "api_key.revoke")
    assert revoke["entity_id"] == audited["key_id"]
    assert revoke["old_values"]["revoked_at"] is None
    assert revoke["new_values"]["revoked_at"] is not None


def test_the_completion_event_has_model_tokens_status_and_duration(audited: dict[str, Any]) -> None:
    (done,) = by_action(trail(audited["gateway"], 6), "llm_request_completed")
    meta = done["metadata"]
    assert meta["model"] == "gpt-4o-mini"
    assert meta["status"] == 200
    assert meta["total_tokens"] > 0
    assert meta["duration_ms"] > 0
    assert done["actor_type"] == "api_key"


def test_pages_follow_each_other_without_gaps_or_overlap(audited: dict[str, Any]) -> None:
    gateway = audited["gateway"]
    everything = [e["event_id"] for e in trail(gateway, 6)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = gateway.admin("GET", f"/tenants/{gateway.tenant_id}/audit", params=params).json()
        seen += [e["event_id"] for e in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == everything


def test_filters_select_by_action_and_entity(audited: dict[str, Any]) -> None:
    gateway = audited["gateway"]
    trail(gateway, 6)
    issued = trail(gateway, 2, action="api_key.issue")
    assert {e["action"] for e in issued} == {"api_key.issue"}
    assert len(issued) == 2
    one = trail(gateway, 1, entity_type="api_key", entity_id=audited["key_id"])
    assert {e["action"] for e in one} == {"api_key.issue", "api_key.revoke"}


def test_a_tenant_admin_reads_their_own_trail_and_not_another(audited: dict[str, Any]) -> None:
    gateway = audited["gateway"]
    own = httpx.get(
        f"{gateway.base_url}/admin/tenants/{gateway.tenant_id}/audit",
        headers={"authorization": f"Bearer {tenant_admin_token(gateway.tenant_id)}"},
        timeout=10,
    )
    assert own.status_code == 200
    other = httpx.get(
        f"{gateway.base_url}/admin/tenants/{gateway.tenant_id}/audit",
        headers={"authorization": f"Bearer {tenant_admin_token('00000000-0000-4000-8000-000000000001')}"},
        timeout=10,
    )
    assert other.status_code == 403
    assert other.json()["error"]["type"]


@pytest.mark.parametrize(
    ("params", "param"),
    [({"cursor": "00000000-0000-4000-8000-000000000000"}, "cursor"), ({"limit": 0}, "limit"),
     ({"since": "yesterday"}, "since"), ({"action": "x" * 101}, "action")],
)  # fmt: skip
def test_bad_query_parameters_are_400_naming_the_parameter(
    audited: dict[str, Any], params: dict[str, Any], param: str
) -> None:
    gateway = audited["gateway"]
    response = gateway.admin("GET", f"/tenants/{gateway.tenant_id}/audit", params=params)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_a_deleted_tenant_keeps_its_trail_with_the_deletion(audited: dict[str, Any]) -> None:
    gateway = audited["gateway"]
    tenant = gateway.create_tenant(f"short-lived-{secrets.token_hex(3)}")
    assert gateway.admin("DELETE", f"/tenants/{tenant}").status_code == 204
    import time

    deadline = time.monotonic() + 30
    actions: list[str] = []
    while time.monotonic() < deadline:
        actions = [e["action"] for e in gateway.admin("GET", f"/tenants/{tenant}/audit").json()["events"]]
        if len(actions) == 2:
            break
        time.sleep(0.1)
    assert actions == ["tenant.delete", "tenant.create"]


def test_flag_changes_are_in_the_platform_trail_with_old_and_new_values(audited: dict[str, Any]) -> None:
    import time

    gateway = audited["gateway"]
    key = f"audit-flag-{secrets.token_hex(3)}"
    assert gateway.admin("PUT", f"/flags/{key}/simple", json={"globally_enabled": True}).status_code == 200
    assert gateway.admin("PUT", f"/flags/{key}/simple", json={"globally_enabled": False}).status_code == 200
    assert gateway.admin("DELETE", f"/flags/{key}").status_code == 204
    deadline = time.monotonic() + 30
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        response = gateway.admin("GET", "/audit", params={"entity_type": "flag", "entity_id": key})
        assert response.status_code == 200, response.text
        events = response.json()["events"]
        if len(events) == 3:
            break
        time.sleep(0.1)
    assert [e["action"] for e in events] == ["flag.delete", "flag.update", "flag.create"]
    update = events[1]
    assert update["old_values"] is not None
    assert update["new_values"] is not None
    assert update["old_values"] != update["new_values"]
    assert update["tenant_id"] is None


def test_a_tenant_admin_cannot_read_the_platform_trail(audited: dict[str, Any]) -> None:
    gateway = audited["gateway"]
    response = httpx.get(
        f"{gateway.base_url}/admin/audit",
        headers={"authorization": f"Bearer {tenant_admin_token(gateway.tenant_id)}"},
        timeout=10,
    )
    assert response.status_code == 403


def test_a_tenant_price_override_is_in_the_tenants_trail(audited: dict[str, Any]) -> None:
    gateway = audited["gateway"]
    price = {"input_per_mtok": "1.5", "output_per_mtok": "6"}
    response = gateway.admin(
        "PUT", "/price-overrides/gpt-4o-mini", params={"tenant_id": gateway.tenant_id}, json=price
    )
    assert response.status_code == 200, response.text
    (event,) = trail(gateway, 1, action="price.update")
    assert event["entity_id"] == "gpt-4o-mini"
    assert event["old_values"] is None
    assert event["new_values"]["output_per_mtok"] in ("6", "6.000000000", 6, 6.0)
