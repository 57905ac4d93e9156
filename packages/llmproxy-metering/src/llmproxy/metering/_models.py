"""The event model, the package's options, and the errors a caller can get (pure: no I/O)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from llmproxy.core import Options

#: Largest token count of one event: far above any real request, low enough that a bucket's sums stay within
#: the 64-bit integers of Redis and PostgreSQL.
MAX_TOKENS = 10**12
MAX_REQUESTS = 10**6


#: The control characters (C0 and DEL) a name may not hold.
CONTROL = re.compile("[\x00-\x1f\x7f]")


def _printable(value: str) -> str:
    # Control characters are refused: the tab separates the parts of a Redis field name (see _keys.py),
    # and NUL is refused by PostgreSQL. (One regex search: a Python loop over the characters cost every
    # metered request ~10 us for its five names.)
    if CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


EventId = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_printable)]
ModelName = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable)]
ProviderName = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_printable)]
ApiKeyId = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_printable)]
Endpoint = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable)]
Status = Annotated[str, Field(min_length=1, max_length=32), AfterValidator(_printable)]
Tokens = Annotated[int, Field(ge=0, le=MAX_TOKENS, strict=True)]


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must be timezone-aware (a naive datetime is ambiguous)")
    return value


class UsageEvent(BaseModel):
    """One metered request: who, when, which model, how many tokens.

    ``event_id`` deduplicates: the same id recorded again for the same tenant and hour within the dedupe
    window counts once (the middlewares use the request id). ``cached_input_tokens`` are part of
    ``input_tokens`` and ``reasoning_tokens`` part of ``output_tokens`` (OpenAI's convention).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: EventId = Field(default_factory=lambda: uuid.uuid4().hex)
    tenant_id: uuid.UUID
    occurred_at: Annotated[datetime, AfterValidator(_aware)]
    model: ModelName | None = None
    provider: ProviderName | None = None
    api_key_id: ApiKeyId | None = None
    endpoint: Endpoint | None = None
    input_tokens: Tokens = 0
    output_tokens: Tokens = 0
    cached_input_tokens: Tokens = 0
    reasoning_tokens: Tokens = 0
    requests: Annotated[int, Field(ge=0, le=MAX_REQUESTS, strict=True)] = 1
    status: Status | None = None

    @model_validator(mode="after")
    def _parts_within_totals(self) -> Self:
        if self.cached_input_tokens > self.input_tokens:
            raise ValueError("cached_input_tokens must not exceed input_tokens (they are a part of them)")
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError("reasoning_tokens must not exceed output_tokens (they are a part of them)")
        return self


HOUR = 3600
DAY = 24 * HOUR


class MeteringOptions(Options):
    """Every setting of the metering package, validated once (all durations in seconds)."""

    #: How long an hour's hash stays in Redis after the hour ends. It must cover the late window, the flush
    #: interval and any PostgreSQL outage you want to survive without loss.
    ttl: int = Field(7 * DAY, ge=HOUR, le=366 * DAY)
    #: Seconds between two flushes (the flusher's loop).
    flush_interval: float = Field(60.0, gt=0, le=DAY)
    #: Events older than this (by ``occurred_at``) are rejected and counted.
    late_window: int = Field(DAY, ge=0, le=90 * DAY)
    #: Events further than this in the future are rejected and counted.
    future_window: int = Field(300, ge=0, le=DAY)
    #: A repeated event id within this long counts once. At least the late window (so a retried late event
    #: is still recognised).
    dedupe_window: int = Field(DAY, ge=60, le=90 * DAY)
    #: Tolerated clock difference between recording processes and Redis: the flusher re-reads this much
    #: of already flushed activity on every run (harmless: writes are idempotent).
    clock_skew: float = Field(60.0, ge=1, le=HOUR)
    #: Every this many seconds the flusher also checks every registered tenant, not just the indexed ones
    #: (a safety net for an index write that was lost; 0 = only at start).
    sweep_interval: float = Field(3600.0, ge=0)
    #: Rows per INSERT statement and keys per Redis pipeline when flushing (a chunk size, not a cap).
    chunk_size: int = Field(1000, ge=1, le=100_000)
    #: Seconds between two reloads of the price overrides in a recording process.
    price_refresh_interval: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _ttl_covers_the_windows(self) -> Self:
        needed = self.late_window + HOUR + 2 * self.flush_interval
        if self.ttl <= needed:
            raise ValueError(
                f"ttl ({self.ttl} s) must exceed late_window + 1 h + 2 x flush_interval ({needed:g} s): "
                "an hour's hash must outlive the last event it can accept and the flush after it"
            )
        if self.dedupe_window < self.late_window:
            raise ValueError("dedupe_window must be at least late_window")
        return self


class MeteringError(Exception):
    """Base of this package's errors."""


class EventOutsideWindow(MeteringError, ValueError):
    """The event's ``occurred_at`` lies outside the accepted window (too late or too far ahead)."""

    def __init__(self, message: str, *, field: str = "occurred_at") -> None:
        super().__init__(message)
        self.field = field


class InvalidUsageQuery(MeteringError, ValueError):
    """A usage query's parameters are invalid; ``param`` names the one at fault."""

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param
