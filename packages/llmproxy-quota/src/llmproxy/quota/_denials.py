"""The deny cache: rejections certain to repeat, answered in the process without asking Redis."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from ._limits import LimitKind, Unit
from ._plan import Plan
from ._results import Admission, LimitResult


class DenyCache:
    """Which limits reject every request for now, and until when (``monotonic()`` seconds).

    A request limit rejects every later request until its retry-after (requests cost 1 and are never
    refunded); an exhausted token budget for at most ``max_ttl`` seconds (a refund settled by another
    process may free capacity). Only while the limit is the one it was denied under: a raised (or lowered)
    limit asks Redis again."""

    def __init__(self, max_ttl: float, monotonic: Callable[[], float], wall: Callable[[], float]) -> None:
        self.max_ttl = max_ttl
        self._monotonic = monotonic
        self._wall = wall
        #: key -> (until, the limit and burst it was denied under); empty: nothing is denied
        self.entries: dict[str, tuple[float, int, int]] = {}
        self._lock = threading.Lock()

    def lookup(self, plan: Plan) -> Admission | None:
        """The rejection of ``plan`` known here, or None (ask Redis)."""
        if not self.entries:
            return None
        now = self._monotonic()
        for spec in plan.specs:
            denied = self.entries.get(spec.key)
            if denied is None or plan.cost(spec) <= 0:
                continue
            until, limit, burst = denied
            if until <= now or limit != spec.limit or burst != spec.burst:
                self.entries.pop(spec.key, None)
                continue
            wait = until - now
            result = LimitResult(
                name=spec.name,
                unit=spec.unit,
                window=spec.window,
                allowed=False,
                limit=spec.limit,
                remaining=0,
                reset_at=self._wall() + wait,
                retry_after=wait,
                usage=spec.limit,
            )
            return Admission(allowed=False, results=(result,), from_deny_cache=True)
        return None

    def remember(self, plan: Plan, results: Sequence[LimitResult]) -> None:
        """Note the limits of a rejected ``plan`` whose rejection is certain to repeat."""
        now = self._monotonic()
        for spec, result in zip(plan.specs, results, strict=True):
            if result.allowed or result.retry_after is None:
                continue
            if spec.unit is Unit.REQUESTS:
                ttl = result.retry_after
            elif spec.kind is not LimitKind.RATE and result.remaining == 0:
                ttl = min(result.retry_after, self.max_ttl)
            else:
                continue
            if ttl > 0:
                with self._lock:
                    self.entries[spec.key] = (now + ttl, spec.limit, spec.burst)
