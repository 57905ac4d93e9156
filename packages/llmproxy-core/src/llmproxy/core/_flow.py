"""Flows: I/O-bearing policy written once, performed sync or async.

A *flow* is a generator that yields the operations it needs (typed values such as ``RedisRead(key)`` or
``DbGet(tenant_id)``), is sent each operation's result, and returns its own result. It never touches a socket.
A driver performs the operations: :func:`run_flow` with a plain function, :func:`arun_flow` with a coroutine
function. An operation that fails is thrown back into the flow as its exception, at the ``yield`` that asked
for it, so the flow decides what a failure means (retry elsewhere, fall back, or let it propagate) with an
ordinary ``try``/``except``; there are no sentinel values.

    def get_flow(key: str) -> Flow[RedisGet | DbGet, Config]:
        try:
            raw = yield RedisGet(key)
        except RedisError:
            raw = None
        ...
        return config

    config = run_flow(get_flow("k"), perform)          # perform(op) -> result
    config = await arun_flow(get_flow("k"), aperform)  # await aperform(op) -> result

``perform`` usually dispatches with ``match op: case RedisGet(key): ...``. A flow may also return before its
first ``yield`` (a cache hit): both runners return that value without performing anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from types import GeneratorType
from typing import Any, TypeAlias, TypeVar, cast, overload

Op = TypeVar("Op")
R = TypeVar("R")

#: A flow yielding operations of type ``Op`` and returning ``R`` (``Flow[RedisRead | DbGet, Config]``).
Flow: TypeAlias = Generator[Op, Any, R]


# The first overload of each runner is for mypy: given only ``Generator[Op, Any, R] | R``, it cannot tell
# which side a plain generator matches and infers ``R`` as ``Never``.
@overload
def run_flow(flow: Generator[Op, Any, R], perform: Callable[[Op], Any]) -> R: ...
@overload
def run_flow(flow: Generator[Op, Any, R] | R, perform: Callable[[Op], Any]) -> R: ...
def run_flow(flow: Generator[Op, Any, R] | R, perform: Callable[[Op], Any]) -> R:
    """Run ``flow`` to its end, performing each operation with ``perform``; the flow's return value.

    An exception raised by ``perform`` is thrown into the flow; whatever the flow does not catch propagates.
    A value that is not a generator (a flow function that answered without I/O) is returned as it is.
    """
    if type(flow) is not GeneratorType:
        return cast(R, flow)
    flow = cast(Generator[Op, Any, R], flow)
    try:
        op = next(flow)
        while True:
            try:
                result = perform(op)
            except Exception as exc:
                op = flow.throw(exc)
            else:
                op = flow.send(result)
    except StopIteration as stop:
        value: R = stop.value
        return value
    finally:
        flow.close()


@overload
async def arun_flow(flow: Generator[Op, Any, R], perform: Callable[[Op], Awaitable[Any]]) -> R: ...
@overload
async def arun_flow(flow: Generator[Op, Any, R] | R, perform: Callable[[Op], Awaitable[Any]]) -> R: ...
async def arun_flow(flow: Generator[Op, Any, R] | R, perform: Callable[[Op], Awaitable[Any]]) -> R:
    """The asyncio twin of :func:`run_flow`: ``perform`` is awaited for each operation.

    A cancellation while an operation is awaited is not thrown into the flow: it closes the flow
    (its ``finally`` blocks run) and propagates.
    """
    if type(flow) is not GeneratorType:
        return cast(R, flow)
    flow = cast(Generator[Op, Any, R], flow)
    try:
        op = next(flow)
        while True:
            try:
                result = await perform(op)
            except Exception as exc:
                op = flow.throw(exc)
            else:
                op = flow.send(result)
    except StopIteration as stop:
        value: R = stop.value
        return value
    finally:
        flow.close()
