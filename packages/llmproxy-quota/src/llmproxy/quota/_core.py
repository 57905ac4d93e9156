"""The decision core shared by the sync and async clients: policies, deny cache, shadow mode, stats.

It never performs network I/O itself: the shells run the script and hand the reply (or the exception) back.
The ``local`` failure policy runs the very same Lua script on a per-process embedded Redis (fakeredis + Lua).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import redis.exceptions

from llmproxy.core import Clock, RequestContext
from llmproxy.ratelimit_config import TenantRateLimitConfiguration

from . import _plan
from ._plan import Plan
from ._results import (
    Admission,
    FailurePolicy,
    InvalidQuotaRequest,
    LimitResult,
    QuotaCheckResult,
    QuotaError,
    QuotaType,
    Reservation,
    Settlement,
)

logger = logging.getLogger("llmproxy.quota")

#: Errors that mean "Redis is unreachable", as opposed to a bug (a script error is not caught).
REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.ClusterError,
    redis.exceptions.TryAgainError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.MasterDownError,
    redis.exceptions.ReadOnlyError,  # talking to a replica after a failover
    OSError,
)


#: the longest lease of an unsettled reservation (seconds): a stream lasts minutes; the bound keeps what the
#: script computes from it (the hash's expiry) far from the limits of its arithmetic
MAX_RESERVATION_TTL = 30 * 86400


class QuotaUnavailable(QuotaError):
    """Redis is unreachable and the failure policy cannot answer (``increment`` under open/closed)."""


@dataclass
class QuotaStats:
    """Counters a process can export (e.g. to OpenTelemetry)."""

    admitted: int = 0
    rejected: int = 0
    redis_failures: int = 0
    failed_open: int = 0
    failed_closed: int = 0
    local_decisions: int = 0
    deny_cache_hits: int = 0
    shadow_rejections: int = 0
    settle_failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class QuotaCore:
    def __init__(
        self,
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
        try:
            self.failure_policy = FailurePolicy(failure_policy)
        except ValueError:
            raise InvalidQuotaRequest(
                "failure_policy", f"must be open, closed or local, got {failure_policy!r}"
            ) from None
        if (
            isinstance(expected_processes, bool)
            or not isinstance(expected_processes, int)
            or expected_processes < 1
        ):
            raise InvalidQuotaRequest(
                "expected_processes", f"must be a positive integer, got {expected_processes!r}"
            )
        if isinstance(reservation_ttl, bool) or not isinstance(reservation_ttl, int | float):
            raise InvalidQuotaRequest(
                "reservation_ttl", f"must be a number of seconds, got {reservation_ttl!r}"
            )
        if not 0 < reservation_ttl <= MAX_RESERVATION_TTL:  # (NaN fails too)
            raise InvalidQuotaRequest(
                "reservation_ttl",
                f"must be more than 0 and at most 30 days in seconds, got {reservation_ttl!r}",
            )
        if not deny_cache_max_ttl >= 0:
            raise InvalidQuotaRequest("deny_cache_max_ttl", "must not be negative")
        self.expected_processes = expected_processes
        self.shadow = shadow
        self.clock = clock
        self.lease_ms = int(reservation_ttl * 1000)
        self.monthly = _plan.monthly_limits(monthly_limits)
        self.stats = QuotaStats()
        self._use_deny_cache = deny_cache
        self.deny_cache_max_ttl = deny_cache_max_ttl
        # key -> (until (monotonic), the limit and burst it was denied under): a changed limit ignores it
        self._denied: dict[str, tuple[float, int, int]] = {}
        self._lock = threading.Lock()
        self._local: Any = None
        # what admits of (tenant, api key, endpoint) send, for the config object it was built from
        self._shapes: dict[tuple[object, ...], _plan.AdmitShape] = {}
        self.retry_redis_after = retry_redis_after
        self._down_until = 0.0  # monotonic time until which Redis is not tried (0: it is)

    # -- plans ----------------------------------------------------------------------------------------------

    def now_ms(self) -> int | None:
        """The script's time: the injected clock's, or None to let Redis use its own ``TIME``."""
        return None if self.clock is None else int(self.clock.now() * 1000)

    def plan_admit(self, ctx: RequestContext, config: TenantRateLimitConfiguration, estimate: int) -> Plan:
        if type(estimate) is not int or not 0 <= estimate <= 2**47:  # the common case checked cheaply
            estimate = _plan.amount("estimate_tokens", estimate)
        cache_key = (ctx.tenant_id, ctx.api_key_id, ctx.endpoint)
        shape = self._shapes.get(cache_key)
        if shape is None or shape.config is not config:
            tenant, _ = _plan.tenant_key(ctx.tenant_id)
            specs = _plan.request_limits(tenant, config, ctx, self.monthly)
            if len(self._shapes) >= 10_000:
                self._shapes.clear()
            shape = self._shapes[cache_key] = _plan.AdmitShape.build(config, tenant, specs)
        return _plan.admit_plan(shape, estimate, self.lease_ms)

    def plan_single(
        self, mode: str, tenant: str, config: TenantRateLimitConfiguration, qt: QuotaType, n: int
    ) -> Plan:
        return _plan.single_plan(mode, tenant, _plan.tenant_limit(tenant, config, qt, self.monthly), n)

    # -- admit ----------------------------------------------------------------------------------------------

    def cached_denial(self, plan: Plan) -> Admission | None:
        """A rejection known locally (a limit exhausted until its retry_after), skipping Redis. Only while the
        plan's limit is the one it was denied under: a raised (or lowered) limit asks Redis again."""
        if not self._use_deny_cache or self.shadow or not self._denied:
            return None
        now = self._monotonic()
        for spec in plan.specs:
            denied = self._denied.get(spec.key)
            if denied is None or plan.cost(spec) <= 0:
                continue
            until, limit, burst = denied
            if until <= now or limit != spec.limit or burst != spec.burst:
                self._denied.pop(spec.key, None)
                continue
            wait = until - now
            wall = self.wall()
            result = LimitResult(
                name=spec.name,
                unit=spec.unit,
                window=spec.window,
                allowed=False,
                limit=spec.limit,
                remaining=0,
                reset_at=wall + wait,
                retry_after=wait,
                usage=spec.limit,
            )
            self._count("deny_cache_hits", "rejected")
            return Admission(allowed=False, results=(result,), from_deny_cache=True)
        return None

    def admission(self, plan: Plan, raw: Any, *, local: bool = False) -> Admission:
        ok, now_ms, results, figures = _plan.parse(plan, raw)
        if ok:
            with self._lock:
                self.stats.admitted += 1
            reservation = _plan.make_reservation(plan, now_ms, figures, local)
            # positional: Admission(allowed, results, reservation, degraded, failure_policy)
            return Admission(True, results, reservation, local, FailurePolicy.LOCAL if local else None)
        if not local:  # the local limiter is in-process already; its verdicts are not Redis's
            self._remember_denials(plan, results)
        if self.shadow:
            self._count("shadow_rejections", "admitted")
            logger.info(
                "quota shadow mode: would reject tenant %s (%s)",
                plan.tenant_id,
                ", ".join(r.name for r in results if not r.allowed),
            )
            return Admission(allowed=True, results=results, shadow_rejected=True, degraded=local)
        self._count("rejected")
        return Admission(
            allowed=False,
            results=results,
            degraded=local,
            failure_policy=FailurePolicy.LOCAL if local else None,
        )

    def redis_down(self) -> bool:
        """True for ``retry_redis_after`` seconds after a failure: calls go straight to the failure policy
        instead of waiting on a dead connection for every request."""
        return self._down_until != 0.0 and self._monotonic() < self._down_until

    def _failed(self, exc: BaseException | None) -> None:
        if exc is not None:
            self._count("redis_failures")
            self._down_until = self._monotonic() + self.retry_redis_after

    def admit_failure(self, plan: Plan, exc: BaseException | None) -> Admission:
        """Redis is unreachable (``exc``, or None while the breaker is open): apply the failure policy."""
        self._failed(exc)
        policy = self.failure_policy
        if exc is not None:
            logger.warning("quota: Redis unreachable (%r); failure policy %s", exc, policy.value)
        if policy is FailurePolicy.LOCAL:
            self._count("local_decisions")
            return self.admission(plan, self.run_local(plan), local=True)
        if policy is FailurePolicy.CLOSED:
            self._count("failed_closed")
            return Admission(allowed=self.shadow, results=(), degraded=True, failure_policy=policy)
        self._count("failed_open")
        return Admission(allowed=True, results=(), degraded=True, failure_policy=policy)

    # -- settle ---------------------------------------------------------------------------------------------

    def plan_settle(self, reservation: Reservation | None, actual: int) -> Plan | None:
        actual = _plan.amount("actual_tokens", actual)
        if reservation is None:
            return None
        return _plan.settle_plan(reservation, actual)

    def settlement(self, plan: Plan, raw: Any) -> Settlement:
        settled = len(raw) > 16  # more than "<ok> <now>": the reservation existed
        return Settlement(settled=settled, charged=plan.token_cost if settled else 0)

    def settle_failure(self, plan: Plan, exc: BaseException | None) -> Settlement:
        self._failed(exc)
        self._count("settle_failures")
        logger.warning("quota: cannot settle reservation %s (%r)", plan.reservation_id, exc)
        if self.failure_policy is FailurePolicy.LOCAL:
            return self.settlement(plan, self.run_local(plan))
        return Settlement(settled=False, degraded=True)

    # -- check / increment ----------------------------------------------------------------------------------

    def check_result(self, plan: Plan, raw: Any) -> QuotaCheckResult:
        _, _, (result,), _ = _plan.parse(plan, raw)
        return QuotaCheckResult(
            allowed=result.allowed,
            current_usage=result.usage,
            limit=result.limit,
            remaining=result.remaining,
            reset_at=result.reset_at,
        )

    def check_failure(self, plan: Plan, exc: BaseException | None) -> QuotaCheckResult:
        self._failed(exc)
        if exc is not None:
            logger.warning("quota: Redis unreachable during check (%r)", exc)
        if self.failure_policy is FailurePolicy.LOCAL:
            return self.check_result(plan, self.run_local(plan))
        spec = plan.specs[0]
        allowed = self.failure_policy is FailurePolicy.OPEN
        return QuotaCheckResult(
            allowed=allowed, current_usage=0, limit=spec.limit, remaining=0, reset_at=self.wall()
        )

    def increment_result(self, plan: Plan, raw: Any) -> int:
        return self.check_result(plan, raw).current_usage

    def increment_failure(self, plan: Plan, exc: BaseException | None) -> int:
        self._failed(exc)
        if self.failure_policy is FailurePolicy.LOCAL:
            return self.increment_result(plan, self.run_local(plan))
        raise QuotaUnavailable(f"cannot increment {plan.specs[0].name}: Redis unreachable ({exc})") from exc

    # -- local policy ---------------------------------------------------------------------------------------

    def run_local(self, plan: Plan) -> Any:
        """Evaluate ``plan`` on this process's embedded Redis at limit / expected_processes."""
        with self._lock:
            if self._local is None:
                import fakeredis

                self._local = fakeredis.FakeRedis(server=fakeredis.FakeServer()).register_script(_plan.SCRIPT)
            script = self._local
        scaled = plan.scaled(self.expected_processes)
        return script(keys=scaled.keys(), args=scaled.args(self.now_ms()))

    # -- helpers --------------------------------------------------------------------------------------------

    def _remember_denials(self, plan: Plan, results: Sequence[LimitResult]) -> None:
        if not self._use_deny_cache:
            return
        now = self._monotonic()
        for spec, result in zip(plan.specs, results, strict=True):
            if result.allowed or result.retry_after is None:
                continue
            # certain for any later request under the same limit: a request limit (cost always 1; requests are
            # never refunded) until its retry_after, or an exhausted token budget, for at most
            # deny_cache_max_ttl (a refund settled by another process may free capacity)
            if spec.unit == "requests":
                ttl = result.retry_after
            elif spec.kind != "g" and result.remaining == 0:
                ttl = min(result.retry_after, self.deny_cache_max_ttl)
            else:
                continue
            if ttl > 0:
                with self._lock:
                    self._denied[spec.key] = (now + ttl, spec.limit, spec.burst)

    def _monotonic(self) -> float:
        return self.clock.monotonic() if self.clock is not None else time.monotonic()

    def wall(self) -> float:
        """Wall-clock seconds (the injected clock's, else the system's)."""
        return self.clock.now() if self.clock is not None else time.time()

    def _count(self, *names: str) -> None:
        with self._lock:
            for name in names:
                setattr(self.stats, name, getattr(self.stats, name) + 1)
