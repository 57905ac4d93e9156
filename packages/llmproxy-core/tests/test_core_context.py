"""RequestContext and usage: one object per request, seen by every layer, isolated between requests."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest

from llmproxy.core import (
    SCOPE_KEY,
    RequestContext,
    Usage,
    bind_context_to_scope,
    context_from_scope,
    current_context,
    ensure_context,
    ensure_environ_context,
    open_usage,
    report_usage,
    reset_current_context,
    use_context,
)


def tid(name: str) -> uuid.UUID:
    """A tenant id per test name (tenant ids are UUIDs)."""
    return uuid.uuid5(uuid.NAMESPACE_OID, name)


def http_scope(path: str = "/v1/chat/completions", headers: list[tuple[bytes, bytes]] | None = None) -> dict:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": headers or [],
        "client": ("10.0.0.7", 5555),
    }


def test_context_from_scope_reads_path_client_and_headers() -> None:
    scope = http_scope(headers=[(b"User-Agent", b"openai-python/1.0"), (b"x-request-id", b"req-1")])
    ctx = RequestContext.from_scope(scope)
    assert (ctx.endpoint, ctx.method, ctx.client_ip) == ("/v1/chat/completions", "POST", "10.0.0.7")
    assert (ctx.user_agent, ctx.request_id) == ("openai-python/1.0", "req-1")
    assert ctx.tenant_id is None
    assert not ctx.is_authenticated


def test_context_is_immutable_and_replace_derives_a_new_one() -> None:
    ctx = RequestContext(endpoint="/x")
    authed = ctx.replace(tenant_id=tid("t1"), scopes=frozenset({"api:access"}))
    assert ctx.tenant_id is None
    assert authed.tenant_id == tid("t1")
    assert authed.endpoint == "/x"
    with pytest.raises(AttributeError):
        ctx.tenant_id = tid("t2")  # type: ignore[misc]


def test_a_tenant_id_string_is_parsed_once_into_a_uuid() -> None:
    tenant = uuid.uuid4()
    assert RequestContext(tenant_id=str(tenant)).tenant_id == tenant
    assert type(RequestContext(tenant_id=str(tenant).upper()).tenant_id) is uuid.UUID


@pytest.mark.parametrize("bad", ["t1", "", "00000000-0000-0000-0000-00000000000g"])
def test_a_tenant_id_that_is_not_a_uuid_is_refused_naming_the_field(bad: str) -> None:
    with pytest.raises(ValueError, match="tenant_id"):
        RequestContext(tenant_id=bad)


def test_a_tenant_id_of_another_type_is_refused() -> None:
    with pytest.raises(TypeError, match="tenant_id"):
        RequestContext(tenant_id=42)  # type: ignore[arg-type]


def test_bound_context_is_in_scope_and_current() -> None:
    scope = http_scope()
    ctx = RequestContext(tenant_id=tid("t1"))
    token = bind_context_to_scope(scope, ctx)
    assert scope[SCOPE_KEY] is ctx
    assert context_from_scope(scope) is ctx
    assert current_context() is ctx
    reset_current_context(token)
    assert current_context() is not ctx


def test_ensure_context_keeps_an_existing_context() -> None:
    scope = http_scope()
    first = ensure_context(scope)
    assert ensure_context(scope) is first


def test_environ_context_from_wsgi_environ() -> None:
    environ = {"PATH_INFO": "/v1/models", "REQUEST_METHOD": "GET", "REMOTE_ADDR": "127.0.0.1"}
    ctx = ensure_environ_context(environ)
    assert (ctx.endpoint, ctx.method, ctx.client_ip) == ("/v1/models", "GET", "127.0.0.1")
    assert environ["llmproxy.context"] is ctx


def test_use_context_restores_the_previous_context() -> None:
    outer = RequestContext(tenant_id=tid("outer"))
    with use_context(outer):
        with use_context(RequestContext(tenant_id=tid("inner"))):
            assert current_context() is not None
            assert current_context().tenant_id == tid("inner")
        assert current_context() is outer


def test_contexts_do_not_leak_between_threads() -> None:
    seen: dict[str, uuid.UUID | None] = {}

    def worker(name: str) -> None:
        with use_context(RequestContext(tenant_id=tid(name))):
            barrier.wait()
            ctx = current_context()
            seen[name] = ctx.tenant_id if ctx else None

    barrier = threading.Barrier(4)
    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {f"t{i}": tid(f"t{i}") for i in range(4)}


async def test_contexts_do_not_leak_between_concurrent_requests() -> None:
    async def request(name: str) -> uuid.UUID | None:
        bind_context_to_scope(http_scope(), RequestContext(tenant_id=tid(name)))
        await asyncio.sleep(0)
        ctx = current_context()
        return ctx.tenant_id if ctx else None

    results = await asyncio.gather(*(asyncio.create_task(request(f"t{i}")) for i in range(10)))
    assert results == [tid(f"t{i}") for i in range(10)]


def test_report_usage_without_a_channel_is_a_no_op() -> None:
    results: list[Usage | None] = []
    # A fresh thread starts with an empty context: no middleware opened a channel there.
    thread = threading.Thread(target=lambda: results.append(report_usage(input_tokens=3)))
    thread.start()
    thread.join()
    assert results == [None]


async def test_handler_usage_reaches_the_middleware_through_the_scope() -> None:
    scope = http_scope()
    usage = open_usage(scope)

    async def handler() -> None:
        report_usage(model="m", input_tokens=10, output_tokens=3, final=False)
        report_usage(output_tokens=7)

    await asyncio.create_task(handler())  # a task copies the context: the same Usage object is reported into
    assert (usage.model, usage.input_tokens, usage.output_tokens, usage.total_tokens) == ("m", 10, 7, 17)
    assert usage.final
    assert usage.reported
    assert open_usage(scope) is usage


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_report_usage_rejects_bad_token_counts(bad: object) -> None:
    usage = Usage()
    with pytest.raises(ValueError, match="input_tokens"):
        usage.update(input_tokens=bad)  # type: ignore[arg-type]
    assert usage.input_tokens == 0
    assert not usage.reported


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3", None.__class__])
def test_a_bad_output_count_leaves_the_usage_as_it_was(bad: object) -> None:
    usage = Usage(model="a", input_tokens=1, output_tokens=2)
    with pytest.raises(ValueError, match="output_tokens"):
        usage.update(model="b", input_tokens=5, output_tokens=bad)  # type: ignore[arg-type]
    assert (usage.model, usage.input_tokens, usage.output_tokens, usage.reported) == ("a", 1, 2, False)


def test_an_int_subclass_is_a_token_count() -> None:
    class Count(int):
        pass

    usage = Usage()
    usage.update(input_tokens=Count(4), output_tokens=Count(0))
    assert (usage.total_tokens, usage.final) == (4, True)
