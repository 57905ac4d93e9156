"""``QuotaClient`` (redis.Redis) and ``AsyncQuotaClient`` (redis.asyncio.Redis): shells over QuotaCore."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Mapping
from typing import Any

from redis.exceptions import NoScriptError

from llmproxy.core import AsyncRedis, Clock, RequestContext, SyncRedis
from llmproxy.ratelimit_config import TenantRateLimitConfiguration

from . import _plan
from ._core import REDIS_UNAVAILABLE, QuotaCore
from ._direct import DirectLine
from ._guard import AsyncGuardMixin, GuardMixin
from ._pipeline import Pipeliner, is_cluster
from ._results import (
    Admission,
    FailurePolicy,
    QuotaCheckResult,
    QuotaType,
    Reservation,
    Settlement,
    UnknownTenant,
)
from ._source import LimitsSource

_CONFIG_TYPE = TenantRateLimitConfiguration


def _unknown(tenant: uuid.UUID, exc: LookupError) -> UnknownTenant:
    return exc if isinstance(exc, UnknownTenant) else UnknownTenant(str(tenant))


class _Base:
    def __init__(
        self,
        redis: Any,
        limits_source: LimitsSource,
        *,
        failure_policy: FailurePolicy | str = FailurePolicy.OPEN,
        expected_processes: int = 1,
        shadow: bool = False,
        clock: Clock | None = None,
        deny_cache: bool = True,
        deny_cache_max_ttl: float = 1.0,
        reservation_ttl: float = 3600.0,
        monthly_limits: Mapping[QuotaType | str, int] | None = None,
        retry_redis_after: float = 1.0,
    ) -> None:
        self.core = QuotaCore(
            failure_policy=failure_policy,
            expected_processes=expected_processes,
            shadow=shadow,
            clock=clock,
            deny_cache=deny_cache,
            deny_cache_max_ttl=deny_cache_max_ttl,
            reservation_ttl=reservation_ttl,
            monthly_limits=monthly_limits,
            retry_redis_after=retry_redis_after,
        )
        self.redis = redis
        self.limits_source = limits_source
        self._sha: bytes = _plan.SCRIPT_SHA
        self._setup()

    def _setup(self) -> None:
        """What a shell adds to the common state."""

    @property
    def stats(self) -> Any:
        return self.core.stats


class QuotaClient(_Base, GuardMixin):
    """Enforces every limit of a request in one Redis round trip (sync).

    ``failure_policy``: ``open`` (admit, log, count), ``closed`` (reject; the middleware answers 503) or
    ``local`` (a per-process limiter at limit / ``expected_processes``). ``shadow`` evaluates and reports
    without rejecting.
    ``clock`` replaces Redis ``TIME`` (tests); None uses the server's time.
    """

    redis: SyncRedis

    def _setup(self) -> None:
        self._line = DirectLine(self.redis)

    def _run(self, plan: _plan.Plan) -> Any:
        # EVALSHA directly (redis-py's Script object costs a few microseconds a call), on a held connection
        command = plan.command(self._sha, self.core.now_ms())
        try:
            return self._line.call(command)
        except NoScriptError:
            self.redis.script_load(_plan.SCRIPT)  # a restarted or new server
            return self._line.call(command)

    def _config(self, tenant_id: object) -> tuple[str, TenantRateLimitConfiguration]:
        tenant, tid = _plan.tenant_key(tenant_id)
        try:
            config = self.limits_source.get(tid)
        except LookupError as exc:
            raise _unknown(tid, exc) from exc
        if type(config) is not _CONFIG_TYPE and inspect.isawaitable(config):
            if inspect.iscoroutine(config):
                config.close()
            raise TypeError("QuotaClient needs a synchronous limits source; use AsyncQuotaClient")
        return tenant, config

    def admit(self, ctx: RequestContext, estimate_tokens: int = 0) -> Admission:
        """Admit or reject a request against every limit that applies; reserve ``estimate_tokens``."""
        _, config = self._config(ctx.tenant_id)
        plan = self.core.plan_admit(ctx, config, estimate_tokens)
        cached = self.core.cached_denial(plan)
        if cached is not None:
            return cached
        if self.core.redis_down():
            return self.core.admit_failure(plan, None)
        try:
            raw = self._run(plan)
        except REDIS_UNAVAILABLE as exc:
            return self.core.admit_failure(plan, exc)
        return self.core.admission(plan, raw)

    def settle(self, reservation: Reservation | None, actual_tokens: int) -> Settlement:
        """Charge the difference between actual and estimated tokens, or refund it. At most once."""
        plan = self.core.plan_settle(reservation, actual_tokens)
        if plan is None:
            return Settlement(settled=False)
        if reservation is not None and reservation.local:
            return self.core.settlement(plan, self.core.run_local(plan))
        if self.core.redis_down():
            return self.core.settle_failure(plan, None)
        try:
            raw = self._run(plan)
        except REDIS_UNAVAILABLE as exc:
            return self.core.settle_failure(plan, exc)
        return self.core.settlement(plan, raw)

    def check(
        self, tenant_id: uuid.UUID | str, quota_type: QuotaType | str, requested_amount: int
    ) -> QuotaCheckResult:
        """Would ``requested_amount`` fit in the tenant's quota? Consumes nothing."""
        tenant, config = self._config(tenant_id)
        plan = self.core.plan_single(
            "check",
            tenant,
            config,
            _plan.quota_type(quota_type),
            _plan.amount("requested_amount", requested_amount),
        )
        if self.core.redis_down():
            return self.core.check_failure(plan, None)
        try:
            raw = self._run(plan)
        except REDIS_UNAVAILABLE as exc:
            return self.core.check_failure(plan, exc)
        return self.core.check_result(plan, raw)

    def increment(self, tenant_id: uuid.UUID | str, quota_type: QuotaType | str, amount: int) -> int:
        """Add ``amount`` to the tenant's quota usage unconditionally (atomic); returns the new usage."""
        tenant, config = self._config(tenant_id)
        plan = self.core.plan_single(
            "force", tenant, config, _plan.quota_type(quota_type), _plan.amount("amount", amount)
        )
        if self.core.redis_down():
            return self.core.increment_failure(plan, None)
        try:
            raw = self._run(plan)
        except REDIS_UNAVAILABLE as exc:
            return self.core.increment_failure(plan, exc)
        return self.core.increment_result(plan, raw)

    def close(self) -> None:
        self._line.close()
        self.redis.close()


class AsyncQuotaClient(_Base, AsyncGuardMixin):
    """The asyncio twin of :class:`QuotaClient` (same core, same script); the limits source may be async."""

    redis: AsyncRedis

    def _setup(self) -> None:
        self._pipeliner = Pipeliner(self.redis, _plan.SCRIPT, batching=not is_cluster(self.redis))

    async def _run(self, plan: _plan.Plan, *, detached: bool = False) -> Any:
        # concurrent calls share round trips (see _pipeline.py)
        return await self._pipeliner.call(plan.command(self._sha, self.core.now_ms()), detached=detached)

    async def _config(self, tenant_id: object) -> tuple[str, TenantRateLimitConfiguration]:
        tenant, tid = _plan.tenant_key(tenant_id)
        try:
            config = self.limits_source.get(tid)
            if type(config) is not _CONFIG_TYPE and inspect.isawaitable(config):
                config = await config
        except LookupError as exc:
            raise _unknown(tid, exc) from exc
        return tenant, config

    async def admit(self, ctx: RequestContext, estimate_tokens: int = 0) -> Admission:
        """Admit or reject a request against every limit that applies; reserve ``estimate_tokens``."""
        _, tid = _plan.tenant_key(ctx.tenant_id)
        try:  # (_config inlined: one coroutine less per request)
            config = self.limits_source.get(tid)
            if type(config) is not _CONFIG_TYPE and inspect.isawaitable(config):
                config = await config
        except LookupError as exc:
            raise _unknown(tid, exc) from exc
        plan = self.core.plan_admit(ctx, config, estimate_tokens)
        cached = self.core.cached_denial(plan)
        if cached is not None:
            return cached
        if self.core.redis_down():
            return self.core.admit_failure(plan, None)
        try:
            raw = await self._run(plan)
        except REDIS_UNAVAILABLE as exc:
            return self.core.admit_failure(plan, exc)
        return self.core.admission(plan, raw)

    async def settle(self, reservation: Reservation | None, actual_tokens: int) -> Settlement:
        """Charge the difference between actual and estimated tokens, or refund it. At most once."""
        plan = self.core.plan_settle(reservation, actual_tokens)
        if plan is None:
            return Settlement(settled=False)
        if reservation is not None and reservation.local:
            return self.core.settlement(plan, self.core.run_local(plan))
        if self.core.redis_down():
            return self.core.settle_failure(plan, None)
        try:
            # detached: queued before this coroutine first waits, and sent even if its caller is cancelled
            raw = await self._run(plan, detached=True)
        except REDIS_UNAVAILABLE as exc:
            return self.core.settle_failure(plan, exc)
        return self.core.settlement(plan, raw)

    async def check(
        self, tenant_id: uuid.UUID | str, quota_type: QuotaType | str, requested_amount: int
    ) -> QuotaCheckResult:
        """Would ``requested_amount`` fit in the tenant's quota? Consumes nothing."""
        tenant, config = await self._config(tenant_id)
        plan = self.core.plan_single(
            "check",
            tenant,
            config,
            _plan.quota_type(quota_type),
            _plan.amount("requested_amount", requested_amount),
        )
        if self.core.redis_down():
            return self.core.check_failure(plan, None)
        try:
            raw = await self._run(plan)
        except REDIS_UNAVAILABLE as exc:
            return self.core.check_failure(plan, exc)
        return self.core.check_result(plan, raw)

    async def increment(self, tenant_id: uuid.UUID | str, quota_type: QuotaType | str, amount: int) -> int:
        """Add ``amount`` to the tenant's quota usage unconditionally (atomic); returns the new usage."""
        tenant, config = await self._config(tenant_id)
        plan = self.core.plan_single(
            "force", tenant, config, _plan.quota_type(quota_type), _plan.amount("amount", amount)
        )
        if self.core.redis_down():
            return self.core.increment_failure(plan, None)
        try:
            raw = await self._run(plan)
        except REDIS_UNAVAILABLE as exc:
            return self.core.increment_failure(plan, exc)
        return self.core.increment_result(plan, raw)

    async def aclose(self) -> None:
        """Send what is still queued (settles), then close the Redis client."""
        await self._pipeliner.aclose()
        await self.redis.aclose()
