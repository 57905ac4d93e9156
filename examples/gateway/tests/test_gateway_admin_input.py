"""Bad input to the admin API is a 400 naming the field (found by schemathesis as 500s before)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from .conftest import GatewayProcess, tenant_admin_token

HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def unique(name: str) -> str:
    return f"{name}-{time.monotonic_ns()}"


def assert_400_naming(response: httpx.Response, param: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["param"] == param
    assert param in error["message"]
    return error


@pytest.mark.parametrize("scope", ["api access", "api:access\n", "é", "x" * 101, "", "a\x00b"])
def test_a_key_scope_outside_the_allowed_characters_is_400(gateway: GatewayProcess, scope: str) -> None:
    tenant_id = gateway.create_tenant(unique("scopes"))
    response = gateway.admin(
        "POST", f"/tenants/{tenant_id}/api-keys", json={"name": "k", "scopes": ["api:access", scope]}
    )
    assert_400_naming(response, "scopes.1")
    assert gateway.admin("GET", f"/tenants/{tenant_id}/api-keys").json() == []


def test_a_tenant_admin_asking_for_a_bad_scope_gets_400(gateway: GatewayProcess) -> None:
    tenant_id = gateway.create_tenant(unique("scoped-admin"))
    response = httpx.post(
        f"{gateway.base_url}/admin/tenants/{tenant_id}/api-keys",
        json={"name": "k", "scopes": ["<script>"]},
        headers={"authorization": f"Bearer {tenant_admin_token(tenant_id)}"},
    )
    assert_400_naming(response, "scopes.0")


def test_allowed_scopes_are_kept(gateway: GatewayProcess) -> None:
    tenant_id = gateway.create_tenant(unique("good-scopes"))
    scopes = ["api:access", "models/read", "admin.*", "a-b_c"]
    response = gateway.admin("POST", f"/tenants/{tenant_id}/api-keys", json={"name": "k", "scopes": scopes})
    assert response.status_code == 201, response.text
    assert response.json()["scopes"] == sorted(scopes)


@pytest.mark.parametrize("name", ["a\x00b", "\x00", "tab\there", "line\nbreak", "\x7f", "\x85", "   ", ""])
def test_a_tenant_name_that_is_blank_or_holds_a_control_character_is_400(
    gateway: GatewayProcess, name: str
) -> None:
    assert_400_naming(gateway.admin("POST", "/tenants", json={"name": name}), "name")


@pytest.mark.parametrize("name", ["a\x00b", "\x1b[31m", "   "])
def test_a_key_name_that_is_blank_or_holds_a_control_character_is_400(
    gateway: GatewayProcess, name: str
) -> None:
    tenant_id = gateway.create_tenant(unique("key-names"))
    response = gateway.admin("POST", f"/tenants/{tenant_id}/api-keys", json={"name": name})
    assert_400_naming(response, "name")


def test_a_name_is_stripped_of_surrounding_whitespace_and_may_hold_any_visible_text(
    gateway: GatewayProcess,
) -> None:
    name = unique("  Ünïcødé tenant ☃")
    response = gateway.admin("POST", "/tenants", json={"name": f"{name}  "})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == name.strip()


def test_a_name_longer_than_200_characters_as_sent_is_400(gateway: GatewayProcess) -> None:
    assert_400_naming(gateway.admin("POST", "/tenants", json={"name": "a" + " " * 200}), "name")


def test_an_offset_beyond_a_64_bit_integer_is_400(gateway: GatewayProcess) -> None:
    assert_400_naming(gateway.admin("GET", "/tenants", params={"offset": 2**63}), "offset")
    largest = gateway.admin("GET", "/tenants", params={"offset": 2**63 - 1})
    assert largest.status_code == 200
    assert largest.json() == []


@pytest.mark.parametrize(
    "expires_at",
    [
        "2001-01-01T00:00:00Z",
        (datetime.now(UTC) - timedelta(seconds=5)).isoformat(),
        "2099-01-01T00:00:00",  # no UTC offset: whose midnight?
        "9999-12-31T23:59:59-05:00",  # after year 9999 in UTC
    ],
)
def test_an_expiry_in_the_past_without_an_offset_or_out_of_range_is_400(
    gateway: GatewayProcess, expires_at: str
) -> None:
    tenant_id = gateway.create_tenant(unique("expiry"))
    response = gateway.admin(
        "POST", f"/tenants/{tenant_id}/api-keys", json={"name": "k", "expires_at": expires_at}
    )
    assert_400_naming(response, "expires_at")
    assert gateway.admin("GET", f"/tenants/{tenant_id}/api-keys").json() == []


def test_a_key_expiring_in_the_future_works_and_reports_its_expiry_in_utc(gateway: GatewayProcess) -> None:
    tenant_id = gateway.create_tenant(unique("future"))
    response = gateway.admin(
        "POST",
        f"/tenants/{tenant_id}/api-keys",
        json={"name": "k", "expires_at": "2099-06-01T12:00:00+02:00"},
    )
    assert response.status_code == 201, response.text
    assert datetime.fromisoformat(response.json()["expires_at"]) == datetime(2099, 6, 1, 10, tzinfo=UTC)
    chat = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        json=HELLO,
        headers={"authorization": f"Bearer {response.json()['key']}"},
        timeout=10,
    )
    assert chat.status_code == 200
