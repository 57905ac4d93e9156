"""``QuotaClient`` (redis.Redis) and ``AsyncQuotaClient`` (redis.asyncio.Redis): shells over QuotaCore.

Each call is a flow of the core (``_core.py``); a shell only performs its operations: a script call through
the Redis client's write-behind (``llmproxy.core.WriteBehind`` / ``AsyncWriteBehind``), shared with whatever
else writes through the same client, so their writes leave in the same pipelines as quota's calls.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Awaitable
from typing import Any, ClassVar, NoReturn

from llmproxy.core import (
    AsyncRedis,
    AsyncWriteBehind,
    RequestContext,
    SyncRedis,
    WriteBehind,
    arun_flow,
    run_flow,
)

from ._core import LimitsLookup, QuotaCore, QuotaOp, QuotaStats, ScriptCall
from ._guard import AsyncGuardMixin, GuardMixin
from ._options import QuotaOptions
from ._plan import SCRIPT
from ._results import (
    Admission,
    LimitResult,
    QuotaCheckResult,
    QuotaType,
    Reservation,
    Settlement,
    TokenEstimate,
)
from ._source import LimitsSource


class _Shell:
    _write_behind: ClassVar[Any]  # the write-behind class of the shell's kind of Redis client

    def __init__(
        self,
        redis: Any,
        limits_source: LimitsSource,
        *,
        options: QuotaOptions | None = None,
        **overrides: Any,
    ) -> None:
        self.core = QuotaCore(limits_source, QuotaOptions.build(options, overrides))
        self.redis = redis
        self._wb = self._write_behind.for_client(redis)

    @property
    def options(self) -> QuotaOptions:
        return self.core.options

    @property
    def limits_source(self) -> LimitsSource:
        return self.core.limits_source

    @limits_source.setter
    def limits_source(self, source: LimitsSource) -> None:
        self.core.limits_source = source

    @property
    def stats(self) -> QuotaStats:
        return self.core.stats


class QuotaClient(_Shell, GuardMixin):
    """Enforces every limit of a request in one Redis round trip (sync).

    Options: a :class:`~llmproxy.quota.QuotaOptions` (``options=``), or its fields as keywords
    (``failure_policy="closed"``, ``clock=...``, ...).
    """

    redis: SyncRedis
    _wb: WriteBehind
    _write_behind = WriteBehind

    def _perform(self, op: QuotaOp) -> Any:
        if isinstance(op, ScriptCall):  # a settle too: a sync caller waits anyway (queued writes go along)
            return self._wb.call(op.command, script=SCRIPT)
        _refuse_async_source(op)

    def admit(self, ctx: RequestContext, estimate_tokens: int | TokenEstimate = 0) -> Admission:
        """Admit or reject a request against every limit that applies; reserve ``estimate_tokens`` (and,
        under a spend budget, their cost). Raises ``ModelNotAllowed`` / ``ModelNotPriced`` before consuming
        anything."""
        return run_flow(self.core.admit(ctx, estimate_tokens), self._perform)

    def settle(
        self, reservation: Reservation | None, actual_tokens: int, actual_cost_micros: int | None = None
    ) -> Settlement:
        """Charge the difference between actual and estimated tokens (and cost: None keeps the estimated
        cost), or refund it. At most once. ``reservation.cost_of(input, output)`` prices the actual usage."""
        return run_flow(self.core.settle(reservation, actual_tokens, actual_cost_micros), self._perform)

    def spend(self, tenant_id: uuid.UUID | str, api_key_id: str | None = None) -> tuple[LimitResult, ...]:
        """The tenant's spend budgets (and ``api_key_id``'s): spent and reserved in the current periods."""
        return run_flow(self.core.spend(tenant_id, api_key_id), self._perform)

    def check(
        self, tenant_id: uuid.UUID | str, quota_type: QuotaType | str, requested_amount: int
    ) -> QuotaCheckResult:
        """Would ``requested_amount`` fit in the tenant's quota? Consumes nothing."""
        return run_flow(self.core.check(tenant_id, quota_type, requested_amount), self._perform)

    def increment(self, tenant_id: uuid.UUID | str, quota_type: QuotaType | str, amount: int) -> int:
        """Add ``amount`` to the tenant's quota usage unconditionally (atomic); returns the new usage."""
        return run_flow(self.core.increment(tenant_id, quota_type, amount), self._perform)

    def close(self) -> None:
        """Send what is still queued, then close the Redis client."""
        self._wb.close()
        self.redis.close()


class AsyncQuotaClient(_Shell, AsyncGuardMixin):
    """The asyncio twin of :class:`QuotaClient` (same core, same script); the limits source may be async."""

    redis: AsyncRedis
    _wb: AsyncWriteBehind
    _write_behind = AsyncWriteBehind

    def _perform(self, op: QuotaOp) -> Awaitable[Any]:
        if isinstance(op, ScriptCall):
            wb = self._wb
            # a settle is submitted: queued before its caller first waits, sent even if the caller is
            # cancelled, and it waits a few ms for company (the next call takes it along)
            return wb.submit(op.command, script=SCRIPT) if op.detached else wb.call(op.command, script=SCRIPT)
        return op.pending

    async def admit(self, ctx: RequestContext, estimate_tokens: int | TokenEstimate = 0) -> Admission:
        """Admit or reject a request against every limit that applies; reserve ``estimate_tokens`` (and,
        under a spend budget, their cost). Raises ``ModelNotAllowed`` / ``ModelNotPriced`` before consuming
        anything."""
        return await arun_flow(self.core.admit(ctx, estimate_tokens), self._perform)

    async def settle(
        self, reservation: Reservation | None, actual_tokens: int, actual_cost_micros: int | None = None
    ) -> Settlement:
        """Charge the difference between actual and estimated tokens (and cost: None keeps the estimated
        cost), or refund it. At most once. ``reservation.cost_of(input, output)`` prices the actual usage."""
        return await arun_flow(
            self.core.settle(reservation, actual_tokens, actual_cost_micros), self._perform
        )

    async def spend(
        self, tenant_id: uuid.UUID | str, api_key_id: str | None = None
    ) -> tuple[LimitResult, ...]:
        """The tenant's spend budgets (and ``api_key_id``'s): spent and reserved in the current periods."""
        return await arun_flow(self.core.spend(tenant_id, api_key_id), self._perform)

    async def check(
        self, tenant_id: uuid.UUID | str, quota_type: QuotaType | str, requested_amount: int
    ) -> QuotaCheckResult:
        """Would ``requested_amount`` fit in the tenant's quota? Consumes nothing."""
        return await arun_flow(self.core.check(tenant_id, quota_type, requested_amount), self._perform)

    async def increment(self, tenant_id: uuid.UUID | str, quota_type: QuotaType | str, amount: int) -> int:
        """Add ``amount`` to the tenant's quota usage unconditionally (atomic); returns the new usage."""
        return await arun_flow(self.core.increment(tenant_id, quota_type, amount), self._perform)

    async def aclose(self) -> None:
        """Send what is still queued (settles), then close the Redis client."""
        await self._wb.aclose()
        await self.redis.aclose()


def _refuse_async_source(op: LimitsLookup) -> NoReturn:
    if inspect.iscoroutine(op.pending):
        op.pending.close()  # never awaited: closed, so Python does not warn about it
    raise TypeError("QuotaClient needs a synchronous limits source; use AsyncQuotaClient")
