"""Policies: allow/deny tables, composition, and the worker decorator."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from llmproxy.auth import (
    ApiAccess,
    HasRole,
    HasScope,
    MissingCredentials,
    Policy,
    PolicyDenied,
    SameTenant,
    TenantAdmin,
    all_of,
    any_of,
    check,
    requires,
)
from llmproxy.core import RequestContext, use_context

T1 = str(uuid.uuid4())
T2 = str(uuid.uuid4())

ADMIN = RequestContext(tenant_id=T1, roles=frozenset({"tenant_admin"}), scopes=frozenset())
CLIENT = RequestContext(tenant_id=T1, roles=frozenset(), scopes=frozenset({"api:access"}))
BOTH = RequestContext(tenant_id=T1, roles=frozenset({"tenant_admin"}), scopes=frozenset({"api:access"}))
NOBODY_SPECIAL = RequestContext(tenant_id=T1)

TABLE: list[tuple[str, Policy, RequestContext, dict[str, Any], bool]] = [
    ("admin role allows TenantAdmin", TenantAdmin(), ADMIN, {}, True),
    ("no role denies TenantAdmin", TenantAdmin(), CLIENT, {}, False),
    ("api:access scope allows ApiAccess", ApiAccess(), CLIENT, {}, True),
    ("no scope denies ApiAccess", ApiAccess(), ADMIN, {}, False),
    ("same tenant allows", SameTenant(), CLIENT, {"tenant_id": T1}, True),
    ("same tenant as UUID object allows", SameTenant(), CLIENT, {"tenant_id": uuid.UUID(T1)}, True),
    ("same tenant in upper case allows", SameTenant(), CLIENT, {"tenant_id": T1.upper()}, True),
    ("other tenant denies", SameTenant(), CLIENT, {"tenant_id": T2}, False),
    ("missing route tenant denies", SameTenant(), CLIENT, {}, False),
    ("garbage route tenant denies", SameTenant(), CLIENT, {"tenant_id": "acme"}, False),
    ("custom param name", SameTenant(param="org"), CLIENT, {"org": T1}, True),
    ("all_of needs every policy", all_of(TenantAdmin(), SameTenant()), ADMIN, {"tenant_id": T2}, False),
    ("all_of passes when all do", all_of(TenantAdmin(), SameTenant()), ADMIN, {"tenant_id": T1}, True),
    ("any_of needs one", any_of(TenantAdmin(), ApiAccess()), CLIENT, {}, True),
    ("any_of denies when none do", any_of(TenantAdmin(), ApiAccess()), NOBODY_SPECIAL, {}, False),
    ("& is all_of", TenantAdmin() & ApiAccess(), BOTH, {}, True),
    ("& denies on one missing", TenantAdmin() & ApiAccess(), ADMIN, {}, False),
    ("| is any_of", TenantAdmin() | ApiAccess(), ADMIN, {}, True),
    ("nesting", (TenantAdmin() | ApiAccess()) & SameTenant(), CLIENT, {"tenant_id": T2}, False),
    ("HasRole custom", HasRole("ops"), RequestContext(tenant_id=T1, roles=frozenset({"ops"})), {}, True),
    ("HasScope custom", HasScope("models:read"), CLIENT, {}, False),
]


@pytest.mark.parametrize(
    ("policy", "ctx", "params", "allowed"), [row[1:] for row in TABLE], ids=[r[0] for r in TABLE]
)
def test_policy_table(policy: Policy, ctx: RequestContext, params: dict[str, Any], allowed: bool) -> None:
    assert policy.allows(ctx, params) is allowed


def test_check_returns_the_context_when_allowed() -> None:
    assert check(ApiAccess(), CLIENT) is CLIENT


def test_check_raises_policy_denied_naming_what_is_required() -> None:
    with pytest.raises(PolicyDenied, match="tenant_admin"):
        check(TenantAdmin(), CLIENT)


@pytest.mark.parametrize("ctx", [None, RequestContext()])
def test_check_without_an_authenticated_caller_raises_missing_credentials(ctx: RequestContext | None) -> None:
    with pytest.raises(MissingCredentials):
        check(ApiAccess(), ctx)


def test_composition_flattens() -> None:
    assert all_of(TenantAdmin(), all_of(ApiAccess(), SameTenant())) == all_of(
        TenantAdmin(), ApiAccess(), SameTenant()
    )
    assert any_of(ApiAccess()) == ApiAccess()


def test_empty_composition_is_refused() -> None:
    with pytest.raises(ValueError):
        all_of()


@requires(TenantAdmin() & SameTenant())
def rotate_keys(job: str, *, tenant_id: str) -> str:
    return f"rotated {job} for {tenant_id}"


@requires(ApiAccess())
async def complete(prompt: str) -> str:
    return prompt.upper()


def test_worker_decorator_runs_the_function_when_allowed() -> None:
    with use_context(ADMIN):
        assert rotate_keys("nightly", tenant_id=T1) == f"rotated nightly for {T1}"


def test_worker_decorator_reads_same_tenant_from_the_call_arguments() -> None:
    with use_context(ADMIN), pytest.raises(PolicyDenied):
        rotate_keys("nightly", tenant_id=T2)


def test_worker_decorator_without_a_context_refuses() -> None:
    with pytest.raises(MissingCredentials):
        rotate_keys("nightly", tenant_id=T1)


async def test_worker_decorator_on_a_coroutine_function() -> None:
    with use_context(CLIENT):
        assert await complete("hi") == "HI"
    with use_context(ADMIN), pytest.raises(PolicyDenied):
        await complete("hi")
