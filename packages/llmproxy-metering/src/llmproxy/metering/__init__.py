"""Usage metering: per tenant, hour and model in Redis, flushed to PostgreSQL, never lost or counted twice."""

from ._asgi import MeteringMiddleware
from ._client import AsyncMeteringClient, MeteringClient
from ._flush import FlushResult, retry_delay
from ._flusher import AsyncFlusher, Flusher
from ._keys import DIRTY_TENANTS, METRICS, bucket_key, dirty_key, hour_label, parse_bucket, seen_key
from ._models import (
    EventOutsideWindow,
    InvalidUsageQuery,
    MeteringError,
    MeteringOptions,
    UsageEvent,
)
from ._prices import GenaiPricesCatalog, LinearPrice, PriceBook, PriceCatalog, PriceOverride
from ._query import DIMENSIONS, GRANULARITIES, UsageBucket, UsageGroup, UsageReport, UsageTotals
from ._record import RECORD_SCRIPT, MeteringStats
from ._repository import AsyncPriceOverrides
from ._tables import flush_state_table, price_overrides_table, usage_hourly_table
from ._track import Tracker, event_for, metered, track
from ._version import __version__
from ._wsgi import WSGIMeteringMiddleware

__all__ = [
    "DIMENSIONS",
    "DIRTY_TENANTS",
    "GRANULARITIES",
    "METRICS",
    "RECORD_SCRIPT",
    "AsyncFlusher",
    "AsyncMeteringClient",
    "AsyncPriceOverrides",
    "EventOutsideWindow",
    "FlushResult",
    "Flusher",
    "GenaiPricesCatalog",
    "InvalidUsageQuery",
    "LinearPrice",
    "MeteringClient",
    "MeteringError",
    "MeteringMiddleware",
    "MeteringOptions",
    "MeteringStats",
    "PriceBook",
    "PriceCatalog",
    "PriceOverride",
    "Tracker",
    "UsageBucket",
    "UsageEvent",
    "UsageGroup",
    "UsageReport",
    "UsageTotals",
    "WSGIMeteringMiddleware",
    "__version__",
    "bucket_key",
    "dirty_key",
    "event_for",
    "flush_state_table",
    "hour_label",
    "metered",
    "parse_bucket",
    "price_overrides_table",
    "retry_delay",
    "seen_key",
    "track",
    "usage_hourly_table",
]
