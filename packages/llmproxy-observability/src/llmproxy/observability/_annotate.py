"""Attributes and events on the request span from other concerns, and spans for worker loops.

``annotate`` / ``add_event`` write to the *request's* SERVER span (not to whatever child span is current),
so the quota decision, flag evaluations and the auth outcome explain the request where it is looked at,
without a span per call. Outside a request they write to the current span; with no recording span they
do nothing. Other llmproxy packages must not depend on this one: they call these through an optional
import, or the application wires them (see the package README).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar, overload

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from ._request import current_request, error_type_of
from ._semconv import ERROR_TYPE, SCOPE_NAME
from ._version import __version__

P = ParamSpec("P")
R = TypeVar("R")


def request_span() -> Span:
    """The SERVER span of the request being handled, else the current span (a no-op one outside any)."""
    request = current_request.get()
    return request.span if request is not None else trace.get_current_span()


def annotate(attributes: Mapping[str, AttributeValue] | None = None, /, **more: AttributeValue) -> None:
    """Set attributes on the request's span: ``annotate({"llmproxy.quota.allowed": True})``."""
    span = request_span()
    if span.is_recording():
        span.set_attributes({**(attributes or {}), **more})


def add_event(name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
    """Add an event to the request's span (e.g. ``feature_flag.evaluation`` with its key and variant)."""
    span = request_span()
    if span.is_recording():
        span.add_event(name, attributes=dict(attributes or {}))


def _tracer() -> trace.Tracer:
    return trace.get_tracer(SCOPE_NAME, __version__)


@contextmanager
def span(
    name: str,
    *,
    attributes: Mapping[str, AttributeValue] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    tracer: trace.Tracer | None = None,
) -> Iterator[Span]:
    """A span around a block (a worker's unit of work): current inside, ended and reset when it exits.

    An exception escaping the block is recorded, sets ``error.type`` and the ERROR status, and propagates.
    """
    with (tracer or _tracer()).start_as_current_span(
        name, kind=kind, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as current:
        try:
            yield current
        except BaseException as exc:
            if current.is_recording():
                current.record_exception(exc)
                current.set_attribute(ERROR_TYPE, error_type_of(exc))
                current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


@overload
def traced(function: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def traced(
    *,
    name: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    kind: SpanKind = ...,
    tracer: trace.Tracer | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def traced(
    function: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    tracer: trace.Tracer | None = None,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Run each call of a function (sync or ``async def``) in a :func:`span` named after it."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        span_name = name or func.__qualname__
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                with span(span_name, attributes=attributes, kind=kind, tracer=tracer):
                    return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with span(span_name, attributes=attributes, kind=kind, tracer=tracer):
                return func(*args, **kwargs)

        return wrapper

    return decorate(function) if function is not None else decorate
