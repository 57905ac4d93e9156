"""The Redis layout (pure): key names, hour labels, hash field names, and reading a bucket back.

One hash per tenant and UTC hour, named as the seed names it: ``metering:{<tenant>}:<yyyy-MM-dd-HH>``. The
tenant is the hash tag, so every key of a tenant (its hours, their dedupe sets, its index) lives in one Redis
Cluster slot and one script call can update them together.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import NamedTuple

from ._models import HOUR

PREFIX = "metering:"
#: Every tenant with recent activity, scored by the time (ms) of its last recorded event (client clock).
DIRTY_TENANTS = "metering:dirty-tenants"

#: The counters of a bucket, in this order everywhere (Redis fields, table columns, query results).
METRICS: tuple[str, ...] = (
    "requests",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "cost_micros",
    "unpriced_requests",
)
#: One letter per metric in the per-combination field names (short names: they travel with every event).
CODES: tuple[str, ...] = ("r", "i", "o", "c", "x", "$", "u")
_CODE_INDEX = {code: i for i, code in enumerate(CODES)}
SEP = "\t"  # control characters are refused in every name (see _models.py), so this one cannot be ambiguous


class Group(NamedTuple):
    """The dimensions of one combination ("" where the event had none)."""

    model: str
    api_key_id: str
    endpoint: str


Counters = list[int]  # one value per METRICS entry


def hour_of(moment: datetime) -> int:
    """Hours since the epoch of the UTC hour holding ``moment``."""
    return int(moment.timestamp()) // HOUR


def hour_label(hour: int) -> str:
    """``yyyy-MM-dd-HH`` of an hour number (UTC), as in the seed's key names."""
    return datetime.fromtimestamp(hour * HOUR, UTC).strftime("%Y-%m-%d-%H")


def parse_hour_label(label: str) -> int:
    return int(datetime.strptime(label, "%Y-%m-%d-%H").replace(tzinfo=UTC).timestamp()) // HOUR


def tenant_tag(tenant_id: uuid.UUID) -> str:
    return f"{PREFIX}{{{tenant_id}}}"


def bucket_key(tenant_id: uuid.UUID, hour: int) -> str:
    """The hash of one tenant and UTC hour: ``metering:{<tenant>}:<yyyy-MM-dd-HH>``."""
    return f"{PREFIX}{{{tenant_id}}}:{hour_label(hour)}"


def seen_key(tenant_id: uuid.UUID, hour: int) -> str:
    """The set of event ids already counted in that hour (deduplication)."""
    return f"{PREFIX}{{{tenant_id}}}:{hour_label(hour)}:seen"


def dirty_key(tenant_id: uuid.UUID) -> str:
    """The tenant's index of touched hours: a sorted set of hour labels scored by last write (Redis ms)."""
    return f"{PREFIX}{{{tenant_id}}}:dirty"


def combo_field(code: str, group: Group) -> str:
    return f"{code}{SEP}{group.model}{SEP}{group.api_key_id}{SEP}{group.endpoint}"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def parse_bucket(raw: Mapping[bytes | str, bytes | str]) -> dict[Group, Counters]:
    """A bucket hash as read by ``HGETALL``: its per-combination counters (totals are their sums).

    Fields it does not know (the seed's totals and ``model:<name>`` counts, which duplicate the combinations)
    are skipped.
    """
    groups: dict[Group, Counters] = {}
    for name, value in raw.items():
        field = _text(name)
        parts = field.split(SEP)
        if len(parts) != 4:
            continue
        index = _CODE_INDEX.get(parts[0])
        if index is None:
            continue
        group = Group(parts[1], parts[2], parts[3])
        counters = groups.get(group)
        if counters is None:
            counters = groups[group] = [0] * len(METRICS)
        counters[index] = int(value)
    return groups
