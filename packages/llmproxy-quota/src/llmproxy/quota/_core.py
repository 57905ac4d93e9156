"""The decision core shared by the sync and async clients: every call's route, policies, shadow mode, stats.

Each public call (``admit``, ``settle``, ``check``, ``increment``) is a *flow* (``llmproxy.core.run_flow``):
it checks its input, asks the limits source, builds the script call's :class:`~._plan.Plan`, then takes the
one route every call takes (:meth:`QuotaCore._execute`): the breaker, the script call (yielded as a
:class:`ScriptCall` for the shell to perform), the reply parsed, or the failure policy applied. A call
answered without I/O (a deny-cache hit, a local reservation) returns its result without yielding.

The ``local`` failure policy runs the very same Lua script on a per-process embedded Redis (fakeredis + Lua).
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from types import GeneratorType
from typing import Any, NamedTuple, TypeAlias, TypeVar, cast

import redis.exceptions

from llmproxy.core import Flow, RequestContext, WriteBehindFull
from llmproxy.ratelimit_config import TenantRateLimitConfiguration

from . import _plan
from ._denials import DenyCache
from ._limits import LimitSpec, request_limits, spend_budgets, tenant_limit
from ._options import QuotaOptions
from ._plan import Mode, Plan
from ._prices import estimate_cost
from ._results import (
    Admission,
    BudgetAlert,
    FailurePolicy,
    InvalidQuotaRequest,
    LimitResult,
    ModelNotAllowed,
    ModelNotPriced,
    QuotaCheckResult,
    QuotaError,
    QuotaType,
    Reservation,
    Settlement,
    TokenEstimate,
    UnknownTenant,
)
from ._source import LimitsSource
from ._validate import amount, check_id, check_model, clock_time, quota_type, tenant_id

logger = logging.getLogger("llmproxy.quota")

R = TypeVar("R")
A = TypeVar("A")
B = TypeVar("B")
Config = TenantRateLimitConfiguration
_CONFIG = TenantRateLimitConfiguration
_SETTLE = Mode.SETTLE  # (read once: an enum member read through its class costs ~1k instructions)
_NO_ALERTS = bytes(8)  # the reply's last integer when no soft threshold was reached

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
    WriteBehindFull,  # the write-behind's queue is full: Redis is too slow or gone
    OSError,
)


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
    budget_alerts: int = 0
    unpriced_admissions: int = 0  # admitted under a spend budget without a price (``unpriced="allow"``)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# The operations of quota's flows.


class ScriptCall(NamedTuple):
    """Run the script: send ``command`` and answer with its reply. (A NamedTuple, built as the tuple it is:
    a slotted dataclass's ``__init__`` costs an admit ~1.5k instructions more.)"""

    command: list[object]
    detached: bool = False  # a settle: queued, and sent even if its caller is cancelled


@dataclass(slots=True)
class LimitsLookup:
    """Wait for an asynchronous limits source's answer (only an asyncio client can)."""

    pending: Awaitable[Config]


QuotaOp: TypeAlias = ScriptCall | LimitsLookup
#: a call's flow, or its result when it needed no I/O
Call: TypeAlias = Flow[QuotaOp, R] | R
#: what to do with a tenant's limits (and two arguments)
Then: TypeAlias = Callable[[Config, A, B], Call[R]]
Single: TypeAlias = tuple[QuotaType, int]  # check / increment: the quota and the amount
Estimate: TypeAlias = tuple[int, TokenEstimate | None]  # admit: the tokens, and their split if known
_new_tuple = tuple.__new__


class QuotaCore:
    def __init__(self, limits_source: LimitsSource, options: QuotaOptions) -> None:
        self.limits_source = limits_source
        self.options = options
        self.failure_policy = options.failure_policy
        self.shadow = options.shadow
        self.clock = options.clock
        self.lease_ms = int(options.reservation_ttl * 1000)
        self.monthly = dict(options.monthly_limits)
        self.prices = options.prices
        self.allow_unpriced = options.unpriced == "allow"
        self.on_budget_alert = options.on_budget_alert
        self.stats = QuotaStats()
        self._denials = (
            DenyCache(options.deny_cache_max_ttl, self._monotonic, self.wall)
            if options.deny_cache and not options.shadow
            else None
        )
        self._lock = threading.Lock()
        self._local: Any = None
        # what admits of (tenant, api key, endpoint) send, for the config object it was built from
        self._shapes: dict[tuple[object, ...], _plan.AdmitShape] = {}
        self._down_until = 0.0  # monotonic time until which Redis is not tried (0: it is)

    # -- the calls ------------------------------------------------------------------------------------------

    def admit(self, ctx: RequestContext, estimate: int | TokenEstimate) -> Call[Admission]:
        split: TokenEstimate | None = None
        if type(estimate) is not int or not 0 <= estimate <= 2**47:  # the common case checked cheaply
            if (
                type(estimate) is TokenEstimate
                and type(estimate[0]) is int
                and type(estimate[1]) is int
                and 0 <= estimate[0] <= 2**46
                and 0 <= estimate[1] <= 2**46
                and (estimate[2] is None or (type(estimate[2]) is str and 0 < len(estimate[2]) <= 200))
            ):  # the common TokenEstimate, checked as cheaply
                split = estimate
                estimate = estimate[0] + estimate[1]
            elif isinstance(estimate, TokenEstimate):
                split = TokenEstimate(
                    amount("estimate_tokens.input_tokens", estimate.input_tokens),
                    amount("estimate_tokens.output_tokens", estimate.output_tokens),
                    None if estimate.model is None else check_model(estimate.model),
                )
                estimate = amount("estimate_tokens", split.total)
            else:
                estimate = amount("estimate_tokens", estimate)
        tenant = ctx.tenant_id
        if tenant is None:
            raise InvalidQuotaRequest("tenant_id", "the request context has no tenant")
        return self._with_limits(tenant, self._admit, ctx, (estimate, split))

    def settle(
        self, reservation: Reservation | None, actual: int, actual_cost: int | None = None
    ) -> Call[Settlement]:
        actual = amount("actual_tokens", actual)
        if actual_cost is not None:
            actual_cost = amount("actual_cost_micros", actual_cost)
        if reservation is None:
            return Settlement(settled=False)
        plan = _plan.settle_plan(reservation, actual, actual_cost)
        if reservation.local:  # held by the local limiter: settled there
            return self.settlement(plan, self.run_local(plan), degraded=True)
        return self._execute(plan, self.settlement, self.settle_failure)

    def check(self, tenant: uuid.UUID | str, qt: QuotaType | str, requested: int) -> Call[QuotaCheckResult]:
        n = amount("requested_amount", requested)
        tid = tenant_id(tenant)
        return self._with_limits(tid, self._check, tid, (quota_type(qt), n))

    def increment(self, tenant: uuid.UUID | str, qt: QuotaType | str, n: int) -> Call[int]:
        n = amount("amount", n)
        tid = tenant_id(tenant)
        return self._with_limits(tid, self._increment, tid, (quota_type(qt), n))

    # -- the route ------------------------------------------------------------------------------------------

    def _execute(
        self,
        plan: Plan,
        on_reply: Callable[[Plan, Any], R],
        on_failure: Callable[[Plan, BaseException | None], R],
    ) -> Flow[QuotaOp, R]:
        """Every script call's route: Redis (unless the breaker is open) or, Redis unreachable, the policy."""
        if self.redis_down():
            return on_failure(plan, None)
        try:
            raw = yield _new_tuple(ScriptCall, (plan.command(self.now_ms()), plan.mode is _SETTLE))
        except REDIS_UNAVAILABLE as exc:
            return on_failure(plan, exc)
        return on_reply(plan, raw)

    def _with_limits(self, tenant: uuid.UUID, then: Then[A, B, R], a: A, b: B) -> Call[R]:
        """``then(config, a, b)`` with the tenant's limits; first waits for an asynchronous source. (Two
        arguments, not ``*args``: packing and unpacking them cost an admit ~2k instructions, measured.)"""
        try:
            config = self.limits_source.get(tenant)
        except LookupError as exc:
            raise _unknown(tenant, exc) from exc
        if type(config) is not _CONFIG and inspect.isawaitable(config):
            return self._after_lookup(config, tenant, then, a, b)
        return then(config, a, b)

    def _after_lookup(
        self, pending: Awaitable[Config], tenant: uuid.UUID, then: Then[A, B, R], a: A, b: B
    ) -> Flow[QuotaOp, R]:
        try:
            config = yield LimitsLookup(pending)
        except LookupError as exc:
            raise _unknown(tenant, exc) from exc
        result = then(config, a, b)
        if type(result) is GeneratorType:
            result = yield from result
        return cast(R, result)

    def _admit(self, config: Config, ctx: RequestContext, request: Estimate) -> Call[Admission]:
        estimate, split = request
        model = split.model if split is not None and split.model is not None else ctx.model
        key = ctx.api_key_id
        if model is not None and key is not None and config.api_keys:
            policy = config.api_keys.get(key)
            if policy is not None and not policy.allows(model):
                raise ModelNotAllowed(model, key)  # before anything is consumed
        # the model is part of the shape only where it has limits: any string a client sends must not grow
        # the cache
        limited = model if model is not None and model in config.model_limits else None
        cache_key = (ctx.tenant_id, key, ctx.endpoint, limited)
        shape = self._shapes.get(cache_key)
        if shape is None or shape.config is not config:
            tenant = str(ctx.tenant_id)
            specs = request_limits(tenant, config, ctx, self.monthly, limited)
            if len(self._shapes) >= 10_000:
                self._shapes.clear()
            shape = self._shapes[cache_key] = _plan.AdmitShape.build(config, tenant, specs)
        plan = _plan.admit_plan(shape, estimate, self.lease_ms)
        if shape.spends:
            price = None
            if model is not None and self.prices is not None:
                if len(model) > 200:
                    check_model(model)
                price = self.prices.token_price(ctx.tenant_id, model)
            if price is not None:
                # the reservation keeps the price: the settle prices the real usage with it
                plan.spend_cost = (
                    price.tokens_cost_micros(split.input_tokens, split.output_tokens)
                    if split is not None
                    else estimate_cost(price, estimate, None)
                )
                plan.price = price
            elif not self.allow_unpriced:
                raise ModelNotPriced(model)
            else:
                self._count("unpriced_admissions")
            plan.api_key_id = key
        denials = self._denials
        if denials is not None and denials.entries:  # (no call while nothing is denied)
            cached = denials.lookup(plan)
            if cached is not None:
                self._count("deny_cache_hits", "rejected")
                return cached
        return self._execute(plan, self.admission, self.admit_failure)

    def spend(self, tenant: uuid.UUID | str, api_key_id: str | None) -> Call[tuple[LimitResult, ...]]:
        """The spend budgets of the tenant (and of ``api_key_id``): spent and reserved so far, consuming
        nothing."""
        tid = tenant_id(tenant)
        if api_key_id is not None:
            check_id("api_key_id", api_key_id)
        return self._with_limits(tid, self._spend, tid, api_key_id)

    def _spend(self, config: Config, tid: uuid.UUID, api_key_id: str | None) -> Call[tuple[LimitResult, ...]]:
        tenant = str(tid)
        specs = spend_budgets(tenant, config.budgets)
        if api_key_id is not None:
            policy = config.api_key_policy(api_key_id)
            if policy is not None:
                specs += spend_budgets(tenant, policy.budgets, api_key_id)
        if not specs:
            return ()
        plan = _plan.multi_plan(Mode.CHECK, tenant, specs)
        return self._execute(plan, self.spend_results, self.spend_failure)

    def spend_results(self, plan: Plan, raw: Any) -> tuple[LimitResult, ...]:
        return _plan.parse(plan, raw)[2]

    def spend_failure(self, plan: Plan, exc: BaseException | None) -> tuple[LimitResult, ...]:
        self._failed(exc)
        if self.failure_policy is FailurePolicy.LOCAL:
            return self.spend_results(plan, self.run_local(plan))
        raise QuotaUnavailable(f"cannot read the spend budgets: Redis unreachable ({exc})") from exc

    def _check(self, config: Config, tid: uuid.UUID, request: Single) -> Call[QuotaCheckResult]:
        plan = self._single(config, tid, Mode.CHECK, request)
        return self._execute(plan, self.check_result, self.check_failure)

    def _increment(self, config: Config, tid: uuid.UUID, request: Single) -> Call[int]:
        return self._execute(
            self._single(config, tid, Mode.FORCE, request), self.usage, self.increment_failure
        )

    def _single(self, config: Config, tid: uuid.UUID, mode: Mode, request: Single) -> Plan:
        """``check`` / ``increment`` of the tenant's ``tid`` (the configuration's may be a shared one's)."""
        qt, n = request
        tenant = str(tid)
        return _plan.single_plan(mode, tenant, tenant_limit(tenant, config, qt, self.monthly), n)

    # -- replies --------------------------------------------------------------------------------------------

    def admission(self, plan: Plan, raw: Any, *, local: bool = False) -> Admission:
        ok, now_ms, results, figures = _plan.parse(plan, raw)
        if ok:
            with self._lock:
                self.stats.admitted += 1
            reservation = _plan.make_reservation(plan, now_ms, figures, local)
            # positional: Admission(allowed, results, reservation, degraded, failure_policy)
            admission = Admission(True, results, reservation, local, FailurePolicy.LOCAL if local else None)
            if raw[-8:] != _NO_ALERTS:  # a spend budget reached its soft threshold
                admission.alerts = self.raise_alerts(plan, raw)
            return admission
        if not local and self._denials is not None:  # (the local limiter's verdicts are not Redis's)
            self._denials.remember(plan, results)
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

    def settlement(self, plan: Plan, raw: Any, *, degraded: bool = False) -> Settlement:
        settled = len(raw) > 16  # more than "<ok> <now>": the reservation existed
        if not settled:
            return Settlement(settled=False, degraded=degraded)
        alerts: tuple[BudgetAlert, ...] = ()
        if plan.spend_cost > 0:
            alerts = self.raise_alerts(plan, raw)
        return Settlement(
            settled=True,
            charged=plan.token_cost,
            degraded=degraded,
            charged_cost=plan.spend_cost,
            alerts=alerts,
        )

    def raise_alerts(self, plan: Plan, raw: bytes) -> tuple[BudgetAlert, ...]:
        """The budget alerts the script reported for ``plan``, counted and handed to ``on_budget_alert``."""
        if raw[-8:] == _NO_ALERTS:  # (nearly always: no call reached a threshold)
            return ()
        figures = _plan.values(raw)
        positions = _plan.alerted(plan, figures)
        if not positions:
            return ()
        now_ms = figures[1]
        alerts = []
        for i in positions:
            spec: LimitSpec = plan.specs[i]
            usage, reset_in = figures[2 + 3 * i], figures[3 + 3 * i]
            alerts.append(
                BudgetAlert(
                    tenant_id=plan.tenant_id,
                    api_key_id=spec.api_key_id,
                    name=spec.name,
                    window=spec.window,
                    limit_micros=spec.limit,
                    threshold_micros=spec.burst,
                    spent_micros=usage,
                    reset_at=(now_ms + reset_in) / 1000,
                )
            )
        with self._lock:
            self.stats.budget_alerts += len(alerts)
        hook = self.on_budget_alert
        for alert in alerts:
            logger.info(
                "quota: %s of tenant %s reached its soft threshold (%d of %d micro-units)",
                alert.name,
                alert.tenant_id,
                alert.spent_micros,
                alert.limit_micros,
            )
            if hook is not None:
                try:
                    hook(alert)
                except Exception:
                    logger.exception("quota: on_budget_alert failed")
        return tuple(alerts)

    def check_result(self, plan: Plan, raw: Any) -> QuotaCheckResult:
        _, _, (result,), _ = _plan.parse(plan, raw)
        return QuotaCheckResult(
            allowed=result.allowed,
            current_usage=result.usage,
            limit=result.limit,
            remaining=result.remaining,
            reset_at=result.reset_at,
        )

    def usage(self, plan: Plan, raw: Any) -> int:
        return self.check_result(plan, raw).current_usage

    # -- Redis unreachable (``exc``; None while the breaker is open): the failure policy --------------------

    def redis_down(self) -> bool:
        """True for ``retry_redis_after`` seconds after a failure: calls go straight to the failure policy
        instead of waiting on a dead connection for every request."""
        return self._down_until != 0.0 and self._monotonic() < self._down_until

    def _failed(self, exc: BaseException | None) -> None:
        if exc is not None:
            self._count("redis_failures")
            self._down_until = self._monotonic() + self.options.retry_redis_after

    def admit_failure(self, plan: Plan, exc: BaseException | None) -> Admission:
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

    def settle_failure(self, plan: Plan, exc: BaseException | None) -> Settlement:
        """Not settled, and ``degraded``: the reservation is Redis's (under every policy; the local limiter
        never saw it), and stays held until its lease ends."""
        self._failed(exc)
        self._count("settle_failures")
        logger.warning("quota: cannot settle reservation %s (%r)", plan.reservation_id, exc)
        return Settlement(settled=False, degraded=True)

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

    def increment_failure(self, plan: Plan, exc: BaseException | None) -> int:
        self._failed(exc)
        if self.failure_policy is FailurePolicy.LOCAL:
            return self.usage(plan, self.run_local(plan))
        raise QuotaUnavailable(f"cannot increment {plan.specs[0].name}: Redis unreachable ({exc})") from exc

    def run_local(self, plan: Plan) -> Any:
        """Evaluate ``plan`` on this process's embedded Redis at limit / expected_processes."""
        with self._lock:
            if self._local is None:
                import fakeredis

                server = fakeredis.FakeServer()
                self._local = fakeredis.FakeRedis(server=server).register_script(_plan.SCRIPT.source)
            script = self._local
        scaled = plan.scaled(self.options.expected_processes)
        return script(keys=[scaled.state_key], args=[scaled.argument(self.now_ms())])

    # -- time and counters ----------------------------------------------------------------------------------

    def now_ms(self) -> int | None:
        """The script's time: the injected clock's, or None to let Redis use its own ``TIME``."""
        return None if self.clock is None else int(clock_time(self.clock.now()) * 1000)

    def wall(self) -> float:
        """Wall-clock seconds (the injected clock's, else the system's)."""
        return clock_time(self.clock.now()) if self.clock is not None else time.time()

    def _monotonic(self) -> float:
        return self.clock.monotonic() if self.clock is not None else time.monotonic()

    def _count(self, *names: str) -> None:
        with self._lock:
            for name in names:
                setattr(self.stats, name, getattr(self.stats, name) + 1)


def _unknown(tenant: uuid.UUID, exc: LookupError) -> UnknownTenant:
    return exc if isinstance(exc, UnknownTenant) else UnknownTenant(str(tenant))
