"""From a finished request (its RequestContext and Usage) to one event; the worker-loop context manager."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import ParamSpec, Protocol, TypeVar

from pydantic import ValidationError

from llmproxy.core import RequestContext, Usage, current_context, current_usage, reset_usage, use_usage

from ._models import CONTROL, EventOutsideWindow, UsageEvent

logger = logging.getLogger("llmproxy.metering")

P = ParamSpec("P")
R = TypeVar("R")


class Recording(Protocol):
    """What the adapters need of a client: ``record`` (both clients have it) and a clock."""

    def record(self, event: UsageEvent) -> bool: ...


def _clean(text: str | None, limit: int) -> str | None:
    # Names come from requests: keep what fits the event's bounds rather than lose the request's usage.
    if not text:
        return None
    cleaned = CONTROL.sub("", text)[:limit]
    return cleaned or None


def event_for(
    ctx: RequestContext,
    usage: Usage | None,
    *,
    started_at: float,
    status: int | str | None,
    provider: str | None = None,
) -> UsageEvent | None:
    """The event of one finished request, or None when it has no tenant (anonymous requests are not metered).

    The event id is the request id, so a request recorded twice (two middlewares, a retry) counts once; the
    hour is that of the request's start. Tokens are what the usage channel holds at the end (for a stream
    cut short, what was streamed so far)."""
    if ctx.tenant_id is None:
        return None
    model = (usage.model if usage is not None else None) or ctx.model
    return UsageEvent(
        event_id=_clean(ctx.request_id, 128) or "-",
        tenant_id=ctx.tenant_id,
        occurred_at=datetime.fromtimestamp(started_at, UTC),
        model=_clean(model, 200),
        provider=_clean(provider, 100),
        api_key_id=_clean(ctx.api_key_id, 100),
        endpoint=_clean(ctx.endpoint, 200),
        input_tokens=usage.input_tokens if usage is not None else 0,
        output_tokens=usage.output_tokens if usage is not None else 0,
        status=_clean(str(status), 32) if status is not None else None,
    )


def record_quietly(client: Recording, make: Callable[[], UsageEvent | None]) -> None:
    """Record, never raising into the request: a bad or out-of-window event is logged (and counted)."""
    try:
        event = make()
        if event is not None:
            client.record(event)
    except (ValidationError, EventOutsideWindow) as exc:
        logger.warning("usage not recorded: %s", exc)
    except Exception:
        logger.exception("usage not recorded")


class Tracker:
    """Handed out by :func:`track`: report the usage as it becomes known (absolute figures)."""

    __slots__ = ("status", "usage")

    def __init__(self, usage: Usage) -> None:
        self.usage = usage
        self.status: str | None = None

    def report(
        self,
        usage: Usage | None = None,
        *,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> None:
        """Report a :class:`~llmproxy.core.Usage` or its figures (what the job consumed so far, in total)."""
        if usage is not None:
            model = usage.model if model is None else model
            input_tokens, output_tokens = usage.input_tokens, usage.output_tokens
        self.usage.update(model=model, input_tokens=input_tokens, output_tokens=output_tokens)


@contextmanager
def track(
    client: Recording,
    ctx: RequestContext | None = None,
    *,
    model: str | None = None,
    provider: str | None = None,
    clock: Callable[[], float] | None = None,
) -> Iterator[Tracker]:
    """Meter one unit of work in a worker loop: one event when the block ends (also when it raises).

    ``ctx`` defaults to the current context. Inside the block ``report_usage(...)`` works as in a request
    handler (the block opens a usage channel, or shares the one a surrounding block opened, e.g. quota's
    ``guard``, so one report reaches both), and so does ``tracker.report(...)``."""
    import time

    now = clock or time.time
    ctx = ctx if ctx is not None else current_context()
    usage = current_usage()  # nested in another concern's block (quota's guard): one channel for both
    if usage is None:
        usage = Usage(model=model)
    elif model is not None and usage.model is None:
        usage.model = model
    tracker = Tracker(usage)
    started = now()
    token = use_usage(usage)
    status = "ok"
    try:
        yield tracker
    except BaseException:
        status = "error"
        raise
    finally:
        reset_usage(token)
        if ctx is not None:
            final_status = tracker.status or status
            record_quietly(
                client,
                lambda: event_for(ctx, usage, started_at=started, status=final_status, provider=provider),
            )


def metered(
    client: Recording, *, model: str | None = None, provider: str | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: run the function inside :func:`track` with the current context (sync functions)."""
    import functools

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with track(client, model=model, provider=provider):
                return fn(*args, **kwargs)

        return wrapper

    return decorate
