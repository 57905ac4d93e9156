"""``MeteringClient`` / ``AsyncMeteringClient``: record events through core's write-behind, query usage."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, ParamSpec, Self, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from llmproxy.core import (
    SYSTEM_CLOCK,
    AsyncWriteBehind,
    Clock,
    Flow,
    RequestContext,
    WriteBehind,
    arun_flow,
    run_flow,
)

from . import _repository as repo
from ._io import AsyncPerformer, SyncPerformer
from ._models import MeteringOptions, UsageEvent
from ._prices import PriceBook
from ._query import QueryOp, UsageReport, build_query, usage_flow
from ._record import RECORD_SCRIPT, MeteringStats, Recorder
from ._track import Tracker, metered, track

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("llmproxy.metering")


class _Base:
    def __init__(
        self,
        engine: Any,
        options: MeteringOptions | None,
        overrides: dict[str, Any],
        prices: PriceBook | None,
        clock: Clock,
    ) -> None:
        self.options = MeteringOptions.build(options, overrides)
        self.prices = prices if prices is not None else PriceBook()
        self.clock = clock
        self.engine = engine
        self._recorder = Recorder(self.options, self.prices, clock)
        self._prices_loaded_at = float("-inf")

    def record(self, event: UsageEvent) -> bool:
        raise NotImplementedError

    def track(
        self, ctx: RequestContext | None = None, *, model: str | None = None, provider: str | None = None
    ) -> AbstractContextManager[Tracker]:
        """``with client.track(ctx, model=...) as t: ... t.report(usage)``: one event when the block ends."""
        return track(self, ctx, model=model, provider=provider, clock=self.clock.now)

    def metered(
        self, *, model: str | None = None, provider: str | None = None
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorator for worker functions: each call is tracked with the current context."""
        return metered(self, model=model, provider=provider)

    @property
    def stats(self) -> MeteringStats:
        """Events recorded, dropped, rejected (late / future) and unpriced, by this client."""
        return self._recorder.stats

    def _prices_due(self) -> bool:
        return (
            self.engine is not None
            and time.monotonic() - self._prices_loaded_at >= self.options.price_refresh_interval
        )


class AsyncMeteringClient(_Base):
    """Records usage events on an asyncio Redis client and answers usage queries.

    ``record`` costs no round trip of its own: the event's script call is queued in the client's shared
    :class:`~llmproxy.core.AsyncWriteBehind` and leaves in the next pipeline (with quota's settle and audit's
    event where those are used). ``engine`` (optional) is needed for queries and price overrides.
    """

    def __init__(
        self,
        redis: Any,
        *,
        engine: AsyncEngine | None = None,
        options: MeteringOptions | None = None,
        prices: PriceBook | None = None,
        clock: Clock = SYSTEM_CLOCK,
        write_behind: AsyncWriteBehind | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(engine, options, overrides, prices, clock)
        self.redis = redis
        self.write_behind = write_behind if write_behind is not None else AsyncWriteBehind.for_client(redis)
        self._perform = AsyncPerformer(redis, engine)
        self._refreshing: asyncio.Task[None] | None = None

    def record(self, event: UsageEvent) -> bool:
        """Queue ``event``; False (counted in ``stats.dropped``) when the write-behind refused it.

        Never blocks. Raises :class:`EventOutsideWindow` (counted) for an event too late or too far ahead.
        """
        script_call, index_write = self._recorder.commands(event)
        if index_write is not None:
            self.write_behind.enqueue(index_write)
        accepted = self.write_behind.enqueue(script_call, script=RECORD_SCRIPT)
        self._recorder.counted(accepted)
        if self._prices_due() and self._refreshing is None:
            try:
                self._refreshing = asyncio.get_running_loop().create_task(self._refresh_in_background())
            except RuntimeError:  # no running loop: refreshed with the next record made inside one
                pass
        return accepted

    async def record_now(self, event: UsageEvent) -> bool:
        """Record and wait for Redis's answer: True when counted, False when the event id was already
        counted (a duplicate). Errors propagate. For tools and tests; the request path uses :meth:`record`."""
        script_call, index_write = self._recorder.commands(event)
        if index_write is not None:
            self.write_behind.enqueue(index_write)
        counted = await self.write_behind.submit(script_call, script=RECORD_SCRIPT)
        self._recorder.counted(True)
        return bool(counted)

    async def get_usage(
        self,
        tenant_id: uuid.UUID,
        start: datetime,
        end: datetime,
        *,
        granularity: str = "hour",
        group_by: Iterable[str] = (),
        tz: str = "UTC",
    ) -> UsageReport:
        """Usage over ``[start, end)`` in buckets of ``granularity`` in ``tz`` (see the README, "Queries")."""
        query = build_query(tenant_id, start, end, granularity=granularity, group_by=group_by, tz=tz)
        return await arun_flow(usage_flow(query, self.options, self.clock.now()), self._perform)

    async def refresh_prices(self) -> None:
        """Load the price overrides from PostgreSQL now (also done every ``price_refresh_interval``)."""
        if self.engine is None:
            return
        async with self.engine.connect() as conn:
            overrides = await conn.run_sync(repo.list_overrides, every=True)
        self.prices.replace(overrides)
        self._prices_loaded_at = time.monotonic()

    async def _refresh_in_background(self) -> None:
        try:
            await self.refresh_prices()
        except Exception as exc:  # the old prices stay; tried again after the interval
            self._prices_loaded_at = time.monotonic()
            logger.warning("could not load price overrides: %s: %s", type(exc).__name__, exc)
        finally:
            self._refreshing = None

    async def start(self) -> None:
        """Load the price overrides before serving (else the first events are priced without them)."""
        await self.refresh_prices()

    async def flush(self) -> None:
        """Send every queued event now."""
        await self.write_behind.flush()

    async def aclose(self) -> None:
        """Send what is queued (the write-behind itself is shared: its owner closes it)."""
        await self.flush()
        if self._refreshing is not None:
            await asyncio.gather(self._refreshing, return_exceptions=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class MeteringClient(_Base):
    """The sync twin of :class:`AsyncMeteringClient` (WSGI apps, threads), on core's :class:`WriteBehind`."""

    def __init__(
        self,
        redis: Any,
        *,
        engine: Engine | None = None,
        options: MeteringOptions | None = None,
        prices: PriceBook | None = None,
        clock: Clock = SYSTEM_CLOCK,
        write_behind: WriteBehind | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(engine, options, overrides, prices, clock)
        self.redis = redis
        self.write_behind = write_behind if write_behind is not None else WriteBehind.for_client(redis)
        self._perform = SyncPerformer(redis, engine)
        self._refresh_lock = threading.Lock()

    def record(self, event: UsageEvent) -> bool:
        """Queue ``event``; False (counted) when the write-behind refused it. Never blocks."""
        script_call, index_write = self._recorder.commands(event)
        if index_write is not None:
            self.write_behind.enqueue(index_write)
        accepted = self.write_behind.enqueue(script_call, script=RECORD_SCRIPT)
        self._recorder.counted(accepted)
        if self._prices_due() and self._refresh_lock.acquire(blocking=False):
            threading.Thread(target=self._refresh_in_background, name="metering-prices", daemon=True).start()
        return accepted

    def record_now(self, event: UsageEvent) -> bool:
        """Record and wait: True when counted, False for a duplicate event id. Errors propagate."""
        script_call, index_write = self._recorder.commands(event)
        if index_write is not None:
            self.write_behind.enqueue(index_write)
        counted = self.write_behind.call(script_call, script=RECORD_SCRIPT)
        self._recorder.counted(True)
        return bool(counted)

    def get_usage(
        self,
        tenant_id: uuid.UUID,
        start: datetime,
        end: datetime,
        *,
        granularity: str = "hour",
        group_by: Iterable[str] = (),
        tz: str = "UTC",
    ) -> UsageReport:
        """Usage over ``[start, end)`` in buckets of ``granularity`` in ``tz`` (see the README, "Queries")."""
        query = build_query(tenant_id, start, end, granularity=granularity, group_by=group_by, tz=tz)
        flow: Flow[QueryOp, UsageReport] = usage_flow(query, self.options, self.clock.now())
        # mypy infers R = Never from run_flow's "Generator[Op, Any, R] | R" parameter (arun_flow is fine)
        return run_flow(flow, self._perform)

    def refresh_prices(self) -> None:
        if self.engine is None:
            return
        with self.engine.connect() as conn:
            overrides = repo.list_overrides(conn, every=True)
        self.prices.replace(overrides)
        self._prices_loaded_at = time.monotonic()

    def _refresh_in_background(self) -> None:
        try:
            self.refresh_prices()
        except Exception as exc:
            self._prices_loaded_at = time.monotonic()
            logger.warning("could not load price overrides: %s: %s", type(exc).__name__, exc)
        finally:
            self._refresh_lock.release()

    def start(self) -> None:
        self.refresh_prices()

    def flush(self, *, timeout: float = 5.0) -> None:
        """Send every queued event now and wait (up to ``timeout``) until they have left."""
        self.write_behind.flush(timeout)

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
