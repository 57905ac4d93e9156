"""Usage queries: validation, time buckets in a timezone, which hours come from where, and the flow.

The rule that keeps Redis and PostgreSQL from both answering for one hour: an hour ``H`` is *final* when no
event can reach it any more and the flusher has written it since, that is when
``end(H) + late_window + clock_skew <= cursor`` (the flusher's committed cursor, Redis time). Final hours are
read from PostgreSQL, every later hour from Redis: one split point per query, each hour from one side. Hours
older than Redis's TTL come from PostgreSQL whatever the cursor says (Redis no longer holds them).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict

from llmproxy.core import Flow

from ._keys import METRICS, Counters, Group, bucket_key, parse_bucket
from ._models import HOUR, InvalidUsageQuery, MeteringOptions

Granularity = Literal["hour", "day", "month"]
GRANULARITIES: tuple[str, ...] = ("hour", "day", "month")
DIMENSIONS: tuple[str, ...] = ("model", "api_key_id", "endpoint")
#: Longest range one query may span (about four years of hours).
MAX_HOURS = 4 * 366 * 24


class UsageTotals(BaseModel):
    """Counters summed over whatever the object covers. ``cost_micros`` excludes ``unpriced_requests``."""

    model_config = ConfigDict(frozen=True)

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    cost_micros: int = 0
    unpriced_requests: int = 0

    @classmethod
    def of(cls, counters: Sequence[int]) -> UsageTotals:
        return cls(**dict(zip(METRICS, counters, strict=True)))


class UsageGroup(UsageTotals):
    """One result of a bucket: the counters of one value of the ``group_by`` dimensions (others None)."""

    model: str | None = None
    api_key_id: str | None = None
    endpoint: str | None = None


class UsageBucket(BaseModel):
    model_config = ConfigDict(frozen=True)

    start: datetime
    end: datetime
    totals: UsageTotals
    #: Requests per model (the seed's ByModel), whatever ``group_by`` says.
    by_model: dict[str, int]
    results: list[UsageGroup]


class UsageReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    tenant_id: uuid.UUID
    start: datetime
    end: datetime
    granularity: str
    tz: str
    group_by: tuple[str, ...]
    buckets: list[UsageBucket]
    totals: UsageTotals
    #: False when Redis could not be read: hours not yet final came from PostgreSQL and may lag.
    complete: bool = True


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime  # local, in the query's timezone
    end: datetime
    first_hour: int  # epoch hours, inclusive
    last_hour: int  # exclusive


@dataclass(frozen=True, slots=True)
class UsageQuery:
    tenant_id: uuid.UUID
    start_hour: int
    end_hour: int
    granularity: str
    group_by: tuple[str, ...]
    tz: ZoneInfo
    tz_name: str
    periods: tuple[Period, ...]


def _zone(tz: str) -> ZoneInfo:
    if not isinstance(tz, str) or not tz or len(tz) > 64:
        raise InvalidUsageQuery(
            "tz must be an IANA timezone name such as 'UTC' or 'Europe/Paris'", param="tz"
        )
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidUsageQuery(  # noqa: B904 - the lookup's own error says less than this one
            f"unknown timezone {tz!r} (use an IANA name, e.g. 'Europe/Paris')", param="tz"
        )


def _moment(value: datetime, zone: ZoneInfo, param: str) -> int:
    if not isinstance(value, datetime):
        raise InvalidUsageQuery(f"{param} must be a datetime", param=param)
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)  # a naive time is read in the query's timezone
    seconds = value.timestamp()
    if seconds != int(seconds):
        raise InvalidUsageQuery(f"{param} must be aligned to a whole hour", param=param)
    return int(seconds)


def build_query(
    tenant_id: uuid.UUID,
    start: datetime,
    end: datetime,
    *,
    granularity: str = "hour",
    group_by: Iterable[str] = (),
    tz: str = "UTC",
) -> UsageQuery:
    """Validate a query and cut ``[start, end)`` into its buckets (raises :class:`InvalidUsageQuery`)."""
    if not isinstance(tenant_id, uuid.UUID):
        raise InvalidUsageQuery("tenant_id must be a UUID", param="tenant_id")
    if granularity not in GRANULARITIES:
        raise InvalidUsageQuery(
            f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}", param="granularity"
        )
    groups = tuple(dict.fromkeys(group_by))
    unknown = [g for g in groups if g not in DIMENSIONS]
    if unknown:
        raise InvalidUsageQuery(
            f"group_by accepts {', '.join(DIMENSIONS)}; unknown: {', '.join(map(repr, unknown))}",
            param="group_by",
        )
    zone = _zone(tz)
    start_s, end_s = _moment(start, zone, "start"), _moment(end, zone, "end")
    if end_s <= start_s:
        raise InvalidUsageQuery("end must be after start", param="end")
    for param, moment in (("start", start_s), ("end", end_s)):
        if moment % HOUR:
            raise InvalidUsageQuery(f"{param} must be aligned to a whole hour", param=param)
    start_h, end_h = start_s // HOUR, end_s // HOUR
    if end_h - start_h > MAX_HOURS:
        raise InvalidUsageQuery(f"the range may span at most {MAX_HOURS} hours", param="end")
    periods = _periods(start_h, end_h, granularity, zone, tz)
    return UsageQuery(tenant_id, start_h, end_h, granularity, groups, zone, tz, periods)


def _periods(start_h: int, end_h: int, granularity: str, zone: ZoneInfo, tz: str) -> tuple[Period, ...]:
    # Each UTC hour belongs to exactly one local period (whole-hour offsets only), so the sum of the buckets
    # of any granularity is the sum of the hours: nothing counts twice, whatever the timezone or DST.
    periods: list[Period] = []
    current_key: tuple[int, ...] | None = None
    first = start_h
    first_local: datetime | None = None
    for hour in range(start_h, end_h + 1):
        local = datetime.fromtimestamp(hour * HOUR, zone)
        offset = local.utcoffset()
        if offset is not None and offset.total_seconds() % HOUR:
            raise InvalidUsageQuery(
                f"timezone {tz!r} has an offset of {offset} at {local.isoformat()}; only whole-hour offsets "
                "are supported (usage is kept per UTC hour)",
                param="tz",
            )
        if granularity == "hour":
            key: tuple[int, ...] = (hour,)
        elif granularity == "day":
            key = (local.year, local.month, local.day)
        else:
            key = (local.year, local.month)
        if hour == start_h:
            if granularity != "hour" and (local.hour or (granularity == "month" and local.day != 1)):
                raise InvalidUsageQuery(
                    f"start must be the beginning of a {granularity} in {tz} (got {local.isoformat()})",
                    param="start",
                )
            current_key, first_local = key, local
            continue
        if key != current_key or hour == end_h:
            if hour == end_h and key == current_key:
                raise InvalidUsageQuery(
                    f"end must be the beginning of a {granularity} in {tz} (got {local.isoformat()})",
                    param="end",
                )
            assert first_local is not None
            periods.append(Period(first_local, local, first, hour))
            current_key, first, first_local = key, hour, local
    return tuple(periods)


def split_hour(query_end: int, cursor_ms: int | None, now_s: float, options: MeteringOptions) -> int:
    """The first hour read from Redis: every hour before it comes from PostgreSQL (see the module doc)."""
    in_redis_from = (int(now_s) - options.ttl) // HOUR + 1  # older hashes have expired
    if cursor_ms is None:
        return in_redis_from
    final_before = int(cursor_ms / 1000 - options.late_window - options.clock_skew) // HOUR
    return min(max(final_before, in_redis_from), query_end)


# -- the flow's operations -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadCursor:
    """The flusher's committed cursor (Redis time, ms), or None if it never ran."""


@dataclass(frozen=True, slots=True)
class ReadHours:
    """PostgreSQL rows ``(hour, model, api_key_id, endpoint, *METRICS)`` of one tenant, hours in
    ``[first, last)``, summed over the dimensions not in ``group_by`` (those come back as "")."""

    tenant_id: uuid.UUID
    first: int
    last: int
    group_by: tuple[str, ...]
    periods: tuple[int, ...] = ()  # first hours of the buckets: sum per bucket in the database


@dataclass(frozen=True, slots=True)
class ReadBuckets:
    """``HGETALL`` of each key, in one pipeline."""

    keys: tuple[str, ...]


QueryOp = ReadCursor | ReadHours | ReadBuckets

_Hourly = dict[int, dict[Group, Counters]]


def usage_flow(query: UsageQuery, options: MeteringOptions, clock_now: float) -> Flow[QueryOp, UsageReport]:
    complete = True
    cursor: int | None = yield ReadCursor()
    split = split_hour(query.end_hour, cursor, clock_now, options)
    hourly: _Hourly = {}
    redis_from = max(split, query.start_hour)
    # PostgreSQL sums per bucket (keyed by the bucket's first hour); Redis answers per hour. The two cover
    # disjoint hours, so a bucket that straddles the split simply gets both parts.
    starts = tuple(p.first_hour for p in query.periods) if query.granularity != "hour" else ()
    if query.start_hour < split:
        last = min(split, query.end_hour)
        _add_rows(hourly, (yield ReadHours(query.tenant_id, query.start_hour, last, query.group_by, starts)))
    # no event can lie beyond the future window: later hours are not asked for
    redis_to = min(query.end_hour, (int(clock_now) + options.future_window) // HOUR + 1)
    if redis_from < redis_to:
        hours = range(redis_from, redis_to)
        try:
            raws: list[Any] = yield ReadBuckets(tuple(bucket_key(query.tenant_id, h) for h in hours))
        except Exception:
            # Redis unreachable: what PostgreSQL has (it lags by up to one flush interval), said so.
            complete = False
            fallback = ReadHours(query.tenant_id, redis_from, redis_to, query.group_by, starts)
            _add_rows(hourly, (yield fallback))
        else:
            for hour, raw in zip(hours, raws, strict=True):
                if raw:
                    hourly[hour] = parse_bucket(raw)
    return assemble(query, hourly, complete)


def _add_rows(hourly: _Hourly, rows: Iterable[Sequence[Any]]) -> None:
    for row in rows:
        groups = hourly.setdefault(int(row[0]), {})
        group = Group(row[1] or "", row[2] or "", row[3] or "")
        counters = groups.get(group)
        values = [int(v or 0) for v in row[4:]]
        if counters is None:
            groups[group] = values
        else:
            for i, v in enumerate(values):
                counters[i] += v


def _project(group: Group, group_by: tuple[str, ...]) -> tuple[str | None, str | None, str | None]:
    return (
        (group.model or None) if "model" in group_by else None,
        (group.api_key_id or None) if "api_key_id" in group_by else None,
        (group.endpoint or None) if "endpoint" in group_by else None,
    )


def assemble(query: UsageQuery, hourly: _Hourly, complete: bool) -> UsageReport:
    """Sum hourly counters into the query's buckets (pure)."""
    width = len(METRICS)
    grand = [0] * width
    buckets: list[UsageBucket] = []
    for period in query.periods:
        totals = [0] * width
        by_model: dict[str, int] = {}
        results: dict[tuple[str | None, str | None, str | None], list[int]] = {}
        for hour in range(period.first_hour, period.last_hour):
            found = hourly.get(hour)
            if not found:
                continue
            for group, counters in found.items():
                key = _project(group, query.group_by)
                sums = results.get(key)
                if sums is None:
                    sums = results[key] = [0] * width
                for i in range(width):
                    sums[i] += counters[i]
                    totals[i] += counters[i]
                if group.model and counters[0]:
                    by_model[group.model] = by_model.get(group.model, 0) + counters[0]
        for i in range(width):
            grand[i] += totals[i]
        buckets.append(
            UsageBucket(
                start=period.start,
                end=period.end,
                totals=UsageTotals.of(totals),
                by_model=by_model,
                results=[
                    UsageGroup(
                        model=k[0], api_key_id=k[1], endpoint=k[2], **dict(zip(METRICS, v, strict=True))
                    )
                    for k, v in sorted(results.items(), key=lambda item: tuple(x or "" for x in item[0]))
                ],
            )
        )
    return UsageReport(
        tenant_id=query.tenant_id,
        start=datetime.fromtimestamp(query.start_hour * HOUR, query.tz),
        end=datetime.fromtimestamp(query.end_hour * HOUR, query.tz),
        granularity=query.granularity,
        tz=query.tz_name,
        group_by=query.group_by,
        buckets=buckets,
        totals=UsageTotals.of(grand),
        complete=complete,
    )
