"""The OpenAPI document tells the truth: every status a route answers is listed, with the error schema.

The property tests send the admin API what a fuzzer would (hypothesis; the schemathesis run itself is
``scripts/schemathesis_run.py``) and check that the answer is never a 5xx, that its status is one the
document lists for that operation, and that an error has OpenAI's shape.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from functools import cache
from typing import Any
from urllib.parse import quote, unquote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import GatewayProcess

ERROR_FIELDS = {"message", "type", "code", "param"}
# Python's json writes (and reads) NaN and Infinity, which are not JSON: the gateway must refuse them too.
ALLOW_NAN = True
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


@cache
def _document(base_url: str) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(f"{base_url}/openapi.json", timeout=10).json()
    return document


def documented_statuses(gw: GatewayProcess, method: str, template: str) -> set[int]:
    return {int(status) for status in _document(gw.base_url)["paths"][template][method]["responses"]}


def check_answer(gw: GatewayProcess, response: httpx.Response, method: str, template: str) -> None:
    assert response.status_code < 500, response.text
    assert response.status_code in documented_statuses(gw, method, template), (
        f"{method.upper()} {template} answered {response.status_code}, not in the document: {response.text}"
    )
    if response.status_code >= 400:
        assert set(response.json()["error"]) == ERROR_FIELDS


# -- the document -----


def test_no_operation_lists_422_and_every_one_lists_its_errors(gateway: GatewayProcess) -> None:
    document = _document(gateway.base_url)
    for template, operations in document["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            assert "422" not in statuses, (method, template)
            assert {"401", "403", "503"} <= statuses, (method, template)
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, template)
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["ErrorDetail"]["properties"]) == ERROR_FIELDS


def test_each_route_lists_what_it_can_answer(gateway: GatewayProcess) -> None:
    def statuses(method: str, template: str) -> set[int]:
        return documented_statuses(gateway, method, template)

    assert statuses("post", "/v1/chat/completions") == {200, 400, 401, 403, 404, 413, 429, 502, 503, 504}
    assert statuses("post", "/admin/tenants") == {201, 400, 401, 403, 409, 413, 503}
    assert statuses("put", "/admin/tenants/{tenant_id}/rate-limits") == {200, 400, 401, 403, 404, 413, 503}
    assert statuses("delete", "/admin/tenants/{tenant_id}/api-keys/{key_id}") == {
        204,
        400,
        401,
        403,
        404,
        503,
    }
    chat_200 = _document(gateway.base_url)["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]
    assert set(chat_200["content"]) == {"application/json", "text/event-stream"}
    rate_limited = _document(gateway.base_url)["paths"]["/v1/embeddings"]["post"]["responses"]["429"]
    assert "Retry-After" in rate_limited["headers"]


def test_every_operation_needs_the_bearer_scheme(gateway: GatewayProcess) -> None:
    document = _document(gateway.base_url)
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for operations in document["paths"].values():
        for operation in operations.values():
            assert operation["security"] == [{"bearer": []}]


def test_an_answer_without_credentials_is_a_documented_401(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.base_url}/admin/tenants", timeout=10)
    assert response.status_code == 401
    check_answer(gateway, response, "get", "/admin/tenants")


def test_a_wrong_method_is_405_naming_every_method_of_the_path(gateway: GatewayProcess) -> None:
    response = gateway.admin("PATCH", "/tenants")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    response = gateway.admin("PATCH", f"/tenants/{gateway.tenant_id}/rate-limits")
    assert response.headers["allow"] == "DELETE, GET, PUT"


# -- what a fuzzer sends -----

anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
texts = st.text(max_size=250) | st.sampled_from(["", " ", "\x00", "a\x00b", "\u2028", "x" * 201])
limits = st.integers(min_value=-1, max_value=2**64) | st.floats() | st.booleans() | anything
times = (
    st.datetimes(timezones=st.timezones()).map(lambda t: t.isoformat())
    | st.datetimes().map(lambda t: t.isoformat())
    | st.timedeltas(min_value=timedelta(days=-2), max_value=timedelta(days=2)).map(str)
    | texts
)


def limit_body(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({name: limits for name in fields}, optional={"extra": anything})


budget = st.fixed_dictionaries(
    {"limit_micros": limits},
    optional={
        "soft_threshold_percent": limits,
        "utc_offset_hours": limits,
        "currency": st.sampled_from(["USD", "EUR", "usd", ""]) | anything,
        "extra": anything,
    },
)
models = st.lists(texts | st.sampled_from(["gpt-4o", "gpt-4o-mini", "m" * 10_000]), max_size=4)
budgets = st.fixed_dictionaries({}, optional={"day": budget | st.none(), "month": budget | st.none(),
                                              "week": budget})  # fmt: skip
rate_limits = st.fixed_dictionaries(
    {
        "global_limit": limit_body(
            requests_per_minute=limits,
            requests_per_day=limits,
            tokens_per_minute=limits,
            tokens_per_day=limits,
        )
        | anything,
        "api_key_limit": limit_body(requests_per_minute=limits, tokens_per_minute=limits) | anything,
    },
    optional={
        "endpoint_limits": st.dictionaries(
            texts | st.text(max_size=20).map(lambda t: "/" + t),
            limit_body(requests_per_minute=limits, tokens_per_minute=limits, burst_capacity=limits),
            max_size=3,
        )
        | anything,
        "model_limits": st.dictionaries(
            texts | st.sampled_from(["gpt-4o", "m" * 10_000]),
            st.fixed_dictionaries(
                {},
                optional={
                    "requests_per_minute": limits,
                    "tokens_per_minute": limits,
                    "tokens_per_day": limits,
                },
            )
            | anything,
            max_size=3,
        )
        | anything,
        "budgets": budgets | anything,
        "api_keys": st.dictionaries(
            st.uuids().map(str) | texts,
            st.fixed_dictionaries({}, optional={"allowed_models": models | st.none(), "budgets": budgets}),
            max_size=2,
        )
        | anything,
    },
)
path_ids = st.uuids().map(str) | st.text(max_size=40).map(lambda t: quote(t, safe=""))


def test_fuzzed_tenant_creation_answers_a_documented_status(gateway: GatewayProcess) -> None:
    @FUZZ
    @given(body=st.fixed_dictionaries({}, optional={"name": texts | anything, "extra": anything}) | anything)
    def fuzz(body: Any) -> None:
        response = gateway.admin("POST", "/tenants", content=json.dumps(body, allow_nan=ALLOW_NAN))
        check_answer(gateway, response, "post", "/admin/tenants")

    fuzz()


def test_fuzzed_key_issuing_answers_a_documented_status(gateway: GatewayProcess) -> None:
    body = st.fixed_dictionaries(
        {"name": texts},
        optional={"scopes": st.lists(texts, max_size=4) | anything, "expires_at": times | anything},
    )

    @FUZZ
    @given(body=body)
    def fuzz(body: dict[str, Any]) -> None:
        response = gateway.admin(
            "POST", f"/tenants/{gateway.tenant_id}/api-keys", content=json.dumps(body, allow_nan=ALLOW_NAN)
        )
        check_answer(gateway, response, "post", "/admin/tenants/{tenant_id}/api-keys")

    fuzz()


def test_fuzzed_listing_answers_a_documented_status(gateway: GatewayProcess) -> None:
    number = st.integers(min_value=-(2**70), max_value=2**70).map(str) | texts

    @FUZZ
    @given(params=st.fixed_dictionaries({}, optional={"limit": number, "offset": number}))
    def fuzz(params: dict[str, str]) -> None:
        check_answer(gateway, gateway.admin("GET", "/tenants", params=params), "get", "/admin/tenants")

    fuzz()


def test_fuzzed_rate_limits_answer_a_documented_status(gateway: GatewayProcess) -> None:
    @FUZZ
    @given(body=rate_limits)
    def fuzz(body: dict[str, Any]) -> None:
        response = gateway.admin(
            "PUT", f"/tenants/{gateway.tenant_id}/rate-limits", content=json.dumps(body, allow_nan=ALLOW_NAN)
        )
        check_answer(gateway, response, "put", "/admin/tenants/{tenant_id}/rate-limits")

    fuzz()


def test_fuzzed_budgets_and_allow_lists_answer_a_documented_status(gateway: GatewayProcess) -> None:
    tenant_id = gateway.create_tenant(f"fuzzed-budgets-{uuid.uuid4().hex[:8]}")
    key_id, _ = gateway.issue_key(tenant_id)
    periods = st.sampled_from(["day", "month"]) | st.text(max_size=8).map(lambda t: quote(t, safe=""))

    @FUZZ
    @given(
        body=budget | anything,
        period=periods,
        scope=st.sampled_from(["", f"/api-keys/{key_id}"]),
        allow_list=st.fixed_dictionaries({}, optional={"allowed_models": models | st.none(), "x": anything})
        | anything,
    )
    def fuzz(body: Any, period: str, scope: str, allow_list: Any) -> None:
        template = "/admin/tenants/{tenant_id}" + ("/api-keys/{key_id}" if scope else "")
        response = gateway.admin(
            "PUT",
            f"/tenants/{tenant_id}{scope}/budgets/{period}",
            content=json.dumps(body, allow_nan=ALLOW_NAN),
        )
        if unquote(period) not in ("", ".", "..") and "/" not in unquote(period):
            check_answer(gateway, response, "put", template + "/budgets/{period}")
        else:  # a period that changed the path's shape: another route or none
            assert response.status_code < 500
        response = gateway.admin("GET", f"/tenants/{tenant_id}{scope}/budgets")
        assert response.status_code == 200, response.text
        check_answer(gateway, response, "get", template + "/budgets")
        response = gateway.admin(
            "PUT",
            f"/tenants/{tenant_id}/api-keys/{key_id}/models",
            content=json.dumps(allow_list, allow_nan=ALLOW_NAN),
        )
        check_answer(gateway, response, "put", "/admin/tenants/{tenant_id}/api-keys/{key_id}/models")

    fuzz()


def test_fuzzed_path_ids_answer_a_documented_status(gateway: GatewayProcess) -> None:
    routes = [
        ("get", "/admin/tenants/{tenant_id}"),
        ("get", "/admin/tenants/{tenant_id}/api-keys"),
        ("get", "/admin/tenants/{tenant_id}/usage"),
        ("get", "/admin/tenants/{tenant_id}/budgets"),
        ("get", "/admin/tenants/{tenant_id}/api-keys/{key_id}/budgets"),
        ("get", "/admin/tenants/{tenant_id}/api-keys/{key_id}/models"),
        ("delete", "/admin/tenants/{tenant_id}/rate-limits"),
        ("delete", "/admin/tenants/{tenant_id}/api-keys/{key_id}"),
    ]

    @FUZZ
    @given(route=st.sampled_from(routes), tenant_id=path_ids, key_id=path_ids)
    def fuzz(route: tuple[str, str], tenant_id: str, key_id: str) -> None:
        method, template = route
        path = template.replace("{tenant_id}", tenant_id).replace("{key_id}", key_id)
        response = gateway.admin(method.upper(), path.removeprefix("/admin"))
        if re.fullmatch(r"/admin(/[^/]+)+", path) and response.status_code != 404:
            check_answer(gateway, response, method, template)
        else:  # an id that changed the path's shape (empty, or ".."): another route or none
            assert response.status_code < 500

    fuzz()
    assert uuid.UUID(gateway.tenant_id)  # the gateway's own tenant was never deleted by the fuzzing
    assert gateway.admin("GET", f"/tenants/{gateway.tenant_id}").status_code == 200
