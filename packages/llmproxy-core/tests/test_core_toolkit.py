"""The toolkit every package shares: flows, options, fail-fast Redis options, the vocabulary without SQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import Field, ValidationError

from llmproxy.core import (
    Flow,
    Options,
    arun_flow,
    cancel_and_wait,
    fail_fast_redis_options,
    raise_if_cancelling,
    run_flow,
)
from llmproxy.core.testing import lifespan


@dataclass(frozen=True)
class Get:
    key: str


@dataclass(frozen=True)
class Put:
    key: str
    value: str


def cache_flow(key: str) -> Flow[Get | Put, str]:
    """Read ``key``; on a miss or a failed read, compute and store it (a store failure is shrugged off)."""
    try:
        value = yield Get(key)
    except ConnectionError:
        value = None
    if value is None:
        value = key.upper()
        try:
            yield Put(key, value)
        except ConnectionError:
            pass
    return value


class Store:
    def __init__(self, fail: set[type] | None = None) -> None:
        self.data: dict[str, str] = {}
        self.fail = fail or set()
        self.done: list[object] = []

    def perform(self, op: Get | Put) -> Any:
        self.done.append(op)
        if type(op) in self.fail:
            raise ConnectionError("down")
        match op:
            case Get(key):
                return self.data.get(key)
            case Put(key, value):
                self.data[key] = value
                return None

    async def aperform(self, op: Get | Put) -> Any:
        return self.perform(op)


def test_a_flow_runs_its_operations_and_returns_its_result() -> None:
    store = Store()
    assert run_flow(cache_flow("a"), store.perform) == "A"
    assert store.done == [Get("a"), Put("a", "A")]
    assert run_flow(cache_flow("a"), store.perform) == "A"
    assert store.done[-1] == Get("a")


async def test_the_async_runner_performs_the_same_flow() -> None:
    store = Store()
    assert await arun_flow(cache_flow("b"), store.aperform) == "B"
    assert store.data == {"b": "B"}


@pytest.mark.parametrize("failing", [Get, Put])
def test_a_failed_operation_is_thrown_into_the_flow(failing: type) -> None:
    store = Store(fail={failing})
    assert run_flow(cache_flow("c"), store.perform) == "C"  # the flow caught it


def test_an_exception_the_flow_does_not_catch_propagates_and_closes_it() -> None:
    closed: list[bool] = []

    def flow() -> Generator[Get, Any, str]:
        try:
            yield Get("x")
            return "unreachable"
        finally:
            closed.append(True)

    def perform(_op: Get) -> Any:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        run_flow(flow(), perform)
    assert closed == [True]


async def test_a_cancelled_operation_closes_the_flow_without_throwing_into_it() -> None:
    import asyncio

    seen: list[str] = []

    def flow() -> Generator[Get, Any, str]:
        try:
            yield Get("x")
        except BaseException as exc:  # pragma: no cover - must not happen
            seen.append(type(exc).__name__)
            raise
        finally:
            seen.append("closed")
        return "unreachable"

    async def perform(_op: Get) -> Any:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await arun_flow(flow(), perform)
    assert seen == ["GeneratorExit", "closed"]


def test_a_flow_that_answers_without_io_is_returned_as_is() -> None:
    assert run_flow("ready", lambda op: None) == "ready"  # type: ignore[arg-type]


class CacheOptions(Options):
    ttl: float = Field(5.0, ge=0)
    size: int = Field(100, ge=1)


def test_options_are_validated_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="ttl"):
        CacheOptions(ttl=-1)
    with pytest.raises(ValidationError, match="colour"):
        CacheOptions(colour="red")  # type: ignore[call-arg]


def test_options_are_frozen_and_built_from_overrides() -> None:
    base = CacheOptions(size=7)
    with pytest.raises(ValidationError):
        base.size = 8  # type: ignore[misc]
    assert CacheOptions.build(base, {"ttl": 1.0}) == CacheOptions(ttl=1.0, size=7)
    assert CacheOptions.build(None, {}) == CacheOptions()
    assert CacheOptions.build(base) is base
    assert base.replace(ttl=2) == CacheOptions(ttl=2, size=7)
    with pytest.raises(TypeError, match="CacheOptions"):
        CacheOptions.build(object())  # type: ignore[arg-type]


def test_fail_fast_options_bound_every_wait_on_a_real_server() -> None:
    options = fail_fast_redis_options("redis://127.0.0.1:6379/0")
    assert options["socket_timeout"] == options["socket_connect_timeout"] == 0.5
    retry = options["retry"]
    assert retry.get_retries() == 1
    assert fail_fast_redis_options("memory://x") == {}


async def test_fail_fast_options_give_each_client_kind_its_own_retry_policy(real_redis_url: str) -> None:
    """One options dict serves both kinds of client; the asyncio one gets the asyncio policy (redis-py 8 would
    convert a synchronous one itself, warning on every client made)."""
    import warnings

    from redis.asyncio.retry import Retry as AsyncRetry

    from llmproxy.core import async_redis_from_url, redis_from_url

    options = fail_fast_redis_options(real_redis_url)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client = async_redis_from_url(real_redis_url, **options)
        try:
            assert await client.ping()
            retry = client.get_retry()
            assert isinstance(retry, AsyncRetry)
            assert retry.get_retries() == 1
        finally:
            await client.aclose()
        sync = redis_from_url(real_redis_url, **options)
        try:
            assert sync.ping()
            assert sync.get_retry() is options["retry"]
        finally:
            sync.close()


def test_the_vocabulary_imports_without_sqlalchemy_or_alembic() -> None:
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('sqlalchemy', 'alembic'):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, Block())
import llmproxy.core as core
from llmproxy.core import RequestContext, report_usage, ResponseWatch, run_flow, AsyncWriteBehind, EdgeError
try:
    core.create_engine
except ImportError as exc:
    assert "[sql]" in str(exc), exc
else:
    raise SystemExit("create_engine imported without SQLAlchemy")
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# -- background loops and lifespans ------------------------------------------------------------------------


async def _swallows_a_cancel() -> None:
    """An await that loses a cancellation, as a library below us may (seen with redis-py 8)."""
    try:
        await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        pass


async def test_a_loop_checking_raise_if_cancelling_stops_although_a_cancel_was_swallowed() -> None:
    turns = 0
    stop = False

    async def loop(check: bool) -> None:
        nonlocal turns
        while not stop:
            if check:
                raise_if_cancelling()
            turns += 1
            await _swallows_a_cancel()

    naive = asyncio.create_task(loop(check=False))
    await asyncio.sleep(0.01)
    naive.cancel()
    done, _ = await asyncio.wait({naive}, timeout=0.3)
    assert not done  # the failure this guards against: the loop runs on
    stop = True
    await naive

    turns, stop = 0, False
    careful = asyncio.create_task(loop(check=True))
    await asyncio.sleep(0.01)
    careful.cancel()
    done, _ = await asyncio.wait({careful}, timeout=0.3)
    assert done
    assert careful.cancelled()
    assert turns == 1


def test_raise_if_cancelling_outside_a_task_does_nothing() -> None:
    raise_if_cancelling()


async def test_lifespan_runs_startup_before_and_shutdown_after_the_block() -> None:
    events: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            events.append(message["type"])
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return

    async with lifespan(app):
        events.append("block")
    assert events == ["lifespan.startup", "block", "lifespan.shutdown"]


async def test_lifespan_raises_the_apps_startup_failure() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    with pytest.raises(RuntimeError, match="no database"):
        async with lifespan(app):
            raise AssertionError("the block must not run")


async def test_lifespan_gives_up_on_an_app_that_never_answers() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(10)

    with pytest.raises(TimeoutError):
        async with lifespan(app, within=0.1):
            pass


async def test_cancel_and_wait_asks_again_until_a_task_that_lost_a_cancel_stops() -> None:
    swallowed = 0

    async def loses_the_first_cancel() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                if swallowed:  # the second request goes through
                    raise
                swallowed += 1
                asyncio.current_task().uncancel()  # type: ignore[union-attr]  # lost without a trace

    task = asyncio.create_task(loses_the_first_cancel())
    await asyncio.sleep(0.01)
    assert await cancel_and_wait(task, within=2.0)
    assert task.cancelled()
    assert swallowed == 1
