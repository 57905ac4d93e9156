"""Properties: composed policies agree with Python's all()/any() over their parts, for any context."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from llmproxy.auth import HasRole, HasScope, Policy, SameTenant, all_of, any_of
from llmproxy.core import RequestContext

TENANTS = [str(uuid.UUID(int=i)) for i in range(1, 4)]
names = st.sampled_from(["a", "b", "c"])
leaves: st.SearchStrategy[Policy] = st.one_of(names.map(HasRole), names.map(HasScope), st.just(SameTenant()))
contexts = st.builds(
    RequestContext,
    tenant_id=st.sampled_from(TENANTS),
    roles=st.frozensets(names),
    scopes=st.frozensets(names),
)
params = st.fixed_dictionaries({"tenant_id": st.sampled_from(TENANTS)})


@given(st.lists(leaves, min_size=1, max_size=5), contexts, params)
def test_all_of_is_all(parts: list[Policy], ctx: RequestContext, p: dict[str, str]) -> None:
    assert all_of(*parts).allows(ctx, p) == all(x.allows(ctx, p) for x in parts)


@given(st.lists(leaves, min_size=1, max_size=5), contexts, params)
def test_any_of_is_any(parts: list[Policy], ctx: RequestContext, p: dict[str, str]) -> None:
    assert any_of(*parts).allows(ctx, p) == any(x.allows(ctx, p) for x in parts)


@given(leaves, leaves, leaves, contexts, params)
def test_operators_distribute_like_booleans(
    a: Policy, b: Policy, c: Policy, ctx: RequestContext, p: dict[str, str]
) -> None:
    assert (a & (b | c)).allows(ctx, p) == ((a & b) | (a & c)).allows(ctx, p)
