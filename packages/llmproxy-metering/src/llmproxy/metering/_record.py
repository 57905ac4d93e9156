"""Recording, sans I/O: an event becomes one script call (plus, at most once a second per tenant, an index
write); the clients only hand those commands to core's write-behind."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any

from llmproxy.core import Clock, Script

from ._keys import DIRTY_TENANTS, SEP, bucket_key, dirty_key, hour_label, seen_key
from ._models import HOUR, EventOutsideWindow, MeteringOptions, UsageEvent
from ._prices import PriceBook

RECORD_SCRIPT = Script(resources.files(__package__).joinpath("lua", "record.lua").read_text("utf-8"))

#: How often (seconds, this process's clock) a tenant's entry in the global index is refreshed. The flusher
#: re-reads ``clock_skew`` seconds of history on every run, which must be at least this.
INDEX_REFRESH = 1.0

Command = list[Any]


@dataclass
class MeteringStats:
    """What a recording client did (export as metrics). Write-behind drops are in its own stats."""

    recorded: int = 0  # events handed to the write-behind
    dropped: int = 0  # events the write-behind refused (queue full, closed): lost, counted
    rejected_late: int = 0  # occurred_at before the late window
    rejected_future: int = 0  # occurred_at beyond the future window
    unpriced: int = 0  # events whose model has no price (no cost recorded, never 0)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Recorder:
    """State shared by a recording client: options, prices, counters, the index throttle."""

    def __init__(self, options: MeteringOptions, prices: PriceBook, clock: Clock) -> None:
        self.options = options
        self.prices = prices
        self.clock = clock
        self.stats = MeteringStats()
        self._lock = threading.Lock()
        self._indexed: dict[uuid.UUID, float] = {}
        self._name_cache: dict[
            tuple[uuid.UUID, int], tuple[str, str, str, str]
        ] = {}  # tenant -> when its index entry was last sent (monotonic)

    def check_window(self, event: UsageEvent) -> None:
        """Raise :class:`EventOutsideWindow` (counted) unless ``occurred_at`` is within the window."""
        now = self.clock.now()
        at = event.occurred_at.timestamp()
        if at < now - self.options.late_window:
            with self._lock:
                self.stats.rejected_late += 1
            raise EventOutsideWindow(
                f"occurred_at {event.occurred_at.isoformat()} is {now - at:.0f} s in the past; events more "
                f"than late_window ({self.options.late_window} s) late are rejected"
            )
        if at > now + self.options.future_window:
            with self._lock:
                self.stats.rejected_future += 1
            raise EventOutsideWindow(
                f"occurred_at {event.occurred_at.isoformat()} is {at - now:.0f} s in the future; more than "
                f"future_window ({self.options.future_window} s) ahead is rejected"
            )

    def commands(self, event: UsageEvent) -> tuple[Command, Command | None]:
        """The script call recording ``event``, and the index write to send with it (or None)."""
        self.check_window(event)
        cost = self.prices.cost_micros(event)
        if cost is None:
            with self._lock:
                self.stats.unpriced += 1
        tenant = event.tenant_id
        hour = int(event.occurred_at.timestamp()) // HOUR
        names = self._names(tenant, hour)
        options = self.options
        hour_end = (hour + 1) * HOUR
        requests = event.requests
        # Few, short arguments: packing the command is most of what recording costs the caller.
        counters = (
            f"{requests},{event.input_tokens},{event.output_tokens},{event.cached_input_tokens},"
            f"{event.reasoning_tokens},{cost or 0},{requests if cost is None else 0}"
        )
        model = event.model or ""
        args = (
            event.event_id,
            names[3],
            hour_end + options.ttl,
            hour_end + options.dedupe_window,
            options.ttl * 1000,
            f"{model}{SEP}{event.api_key_id or ''}{SEP}{event.endpoint or ''}",
            model,
            counters,
        )
        return RECORD_SCRIPT.command(names[:3], args), self._index_command(tenant)

    def _names(self, tenant: uuid.UUID, hour: int) -> tuple[str, str, str, str]:
        """The three keys and the hour label (cached: the same few tenant-hours recur on every request)."""
        cache = self._name_cache
        found = cache.get((tenant, hour))
        if found is None:
            if len(cache) > 10_000:
                cache.clear()
            found = cache[(tenant, hour)] = (
                bucket_key(tenant, hour),
                seen_key(tenant, hour),
                dirty_key(tenant),
                hour_label(hour),
            )
        return found

    def _index_command(self, tenant: uuid.UUID) -> Command | None:
        # The global index lives in another Cluster slot than the tenant's keys, so it cannot be written by
        # the same script; a per-process throttle keeps it to one write per tenant per INDEX_REFRESH.
        now = time.monotonic()
        last = self._indexed.get(tenant)
        if last is not None and now - last < INDEX_REFRESH:
            return None
        if len(self._indexed) > 100_000:
            self._indexed.clear()
        self._indexed[tenant] = now
        # The real wall clock, not the injectable one: the flusher compares this score with Redis TIME.
        return ["ZADD", DIRTY_TENANTS, int(time.time() * 1000), str(tenant)]

    def counted(self, accepted: bool) -> None:
        with self._lock:
            if accepted:
                self.stats.recorded += 1
            else:
                self.stats.dropped += 1
