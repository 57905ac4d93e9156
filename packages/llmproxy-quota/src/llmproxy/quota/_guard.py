"""``guard`` context managers and ``guarded`` decorators for worker loops (sync and async).

What a guarded block means is decided once, by :class:`Guard` (``_enter`` / ``_exit``); the sync and async
context managers only call the client's ``admit`` and ``settle`` around it.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, ParamSpec, Protocol, TypeVar

from llmproxy.core import RequestContext, Usage, current_context, current_usage, reset_usage, use_usage

from ._results import (
    Admission,
    InvalidQuotaRequest,
    QuotaExceeded,
    Reservation,
    Settlement,
    TokenEstimate,
)

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class Guard:
    """What a guarded block sees: the admission, and where to tell the actual tokens.

    The block may call :meth:`report` or ``llmproxy.core.report_usage(...)`` (the guard opens a usage
    channel for the block); otherwise the estimate stands. A block that raises without reporting is settled
    at 0 tokens.
    """

    admission: Admission
    estimate: int | TokenEstimate
    usage: Usage = field(default_factory=Usage)
    actual: int | None = None
    _token: contextvars.Token[Usage | None] | None = field(default=None, repr=False, compare=False)

    def report(self, tokens: int) -> None:
        self.actual = tokens

    def tokens_used(self, failed: bool) -> int:
        if self.actual is not None:
            return self.actual
        if self.usage.reported:
            return self.usage.total_tokens
        if failed:
            return 0
        return self.estimate if isinstance(self.estimate, int) else self.estimate.total

    def cost_used(self, failed: bool) -> int | None:
        """The spend to settle (None: the estimate stands, or no spend budget applies)."""
        reservation = self.admission.reservation
        if reservation is None or not any(spec.unit == "spend" for spec in reservation.limits):
            return None
        if self.usage.reported:
            return reservation.cost_of(self.usage.input_tokens, self.usage.output_tokens)
        if self.actual is not None:  # a bare token count: priced like the estimate of one
            return reservation.cost_of(0, self.actual) if self.actual else 0
        return 0 if failed else None

    @classmethod
    def _enter(cls, admission: Admission, estimate: int | TokenEstimate) -> Guard:
        """The block's guard, its usage channel current; :class:`QuotaExceeded` if it was not admitted."""
        if not admission.allowed:
            raise QuotaExceeded(admission)
        # Nested in another concern's block (metering's track): one usage channel for both.
        guard = cls(admission, estimate, usage=current_usage() or Usage())
        guard._token = use_usage(guard.usage)
        return guard

    def _exit(self, failed: bool) -> tuple[Reservation | None, int, int | None]:
        """The block ended (``failed``: it raised): what to settle."""
        if self._token is not None:
            reset_usage(self._token)
            self._token = None
        return self.admission.reservation, self.tokens_used(failed), self.cost_used(failed)


def _context(ctx: RequestContext | None) -> RequestContext:
    ctx = ctx if ctx is not None else current_context()
    if ctx is None:
        raise InvalidQuotaRequest("ctx", "no RequestContext given and none is current")
    return ctx


class _SyncClient(Protocol):
    def admit(self, ctx: RequestContext, estimate_tokens: int | TokenEstimate = 0) -> Admission: ...
    def settle(
        self, reservation: Reservation | None, actual_tokens: int, actual_cost_micros: int | None = None
    ) -> Settlement: ...


class _AsyncClient(Protocol):
    async def admit(self, ctx: RequestContext, estimate_tokens: int | TokenEstimate = 0) -> Admission: ...
    async def settle(
        self, reservation: Reservation | None, actual_tokens: int, actual_cost_micros: int | None = None
    ) -> Settlement: ...


class GuardMixin:
    @contextmanager
    def guard(
        self: _SyncClient, ctx: RequestContext | None = None, *, cost: int | TokenEstimate = 0
    ) -> Iterator[Guard]:
        """Admit (raising :class:`QuotaExceeded` if rejected), run the block, settle the tokens it used."""
        guard = Guard._enter(self.admit(_context(ctx), cost), cost)
        failed = True
        try:
            yield guard
            failed = False
        finally:
            self.settle(*guard._exit(failed))

    def guarded(self, *, cost: int | TokenEstimate = 0) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a function so every call runs under :meth:`guard` with the current RequestContext."""

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                client: Any = self  # (a QuotaClient: the mixin's self type is not the client's)
                with client.guard(cost=cost):
                    return fn(*args, **kwargs)

            return wrapper

        return decorate


class AsyncGuardMixin:
    @asynccontextmanager
    async def guard(
        self: _AsyncClient, ctx: RequestContext | None = None, *, cost: int | TokenEstimate = 0
    ) -> AsyncIterator[Guard]:
        """Admit (raising :class:`QuotaExceeded` if rejected), run the block, settle the tokens it used."""
        guard = Guard._enter(await self.admit(_context(ctx), cost), cost)
        failed = True
        try:
            yield guard
            failed = False
        finally:
            await self.settle(*guard._exit(failed))

    def guarded(
        self, *, cost: int | TokenEstimate = 0
    ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
        """Decorate a coroutine function so every call runs under :meth:`guard` with the current context."""

        def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
            @functools.wraps(fn)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                client: Any = self  # (an AsyncQuotaClient)
                async with client.guard(cost=cost):
                    return await fn(*args, **kwargs)

            return wrapper

        return decorate
