"""Input checks: what callers, limits sources and clocks hand the engine, refused with the field's name."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping

from llmproxy.core import parse_tenant_id

from ._results import InvalidQuotaRequest, QuotaType

#: costs and amounts: far below what the script's doubles hold exactly (2^53)
MAX_AMOUNT = 2**47
#: the clock's latest acceptable time: 9999-12-31 (ms since the epoch stay exact in the script's doubles and
#: in the 64-bit integers of its state long after that)
MAX_TIME = 253_402_300_799.0
#: an endpoint path as a limit's field in the tenant's hash (the script's field length is 16 bits)
MAX_ENDPOINT_BYTES = 2048


def tenant_id(value: object) -> uuid.UUID:
    """A tenant id (``UUID`` or its string form) as a UUID, or a clear error."""
    try:
        return parse_tenant_id(value)
    except (TypeError, ValueError) as exc:
        raise InvalidQuotaRequest("tenant_id", str(exc).removeprefix("tenant_id ")) from None


def amount(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidQuotaRequest(field, f"must be an integer, got {type(value).__name__}")
    if value < 0:
        raise InvalidQuotaRequest(field, f"must not be negative, got {value}")
    if value > MAX_AMOUNT:
        raise InvalidQuotaRequest(field, f"is unreasonably large: {value}")
    return value


def check_id(field: str, value: object) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= 200:
        raise InvalidQuotaRequest(field, "must be a non-empty string of at most 200 characters")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise InvalidQuotaRequest(field, f"must not contain whitespace or control characters: {value!r}")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_unlimited_path(value: str) -> None:
    """A request path that matched none of the tenant's endpoint limits. No configured path holds a control
    character, yet an app may route one to a limited endpoint (Starlette's routes match
    ``/v1/chat/completions\\n``, a client's ``%0A``): such a path is refused, not let past the limits."""
    if _CONTROL.search(value):
        raise InvalidQuotaRequest("endpoint", "the request path must not contain control characters")


def check_endpoint(value: str) -> None:
    """An endpoint path that has a limit (a custom limits source may hold any string)."""
    if len(value.encode()) > MAX_ENDPOINT_BYTES:
        raise InvalidQuotaRequest("endpoint", f"must be at most {MAX_ENDPOINT_BYTES} bytes long")


#: a model name as a limit's field (what the configuration allows, a custom source may exceed)
MAX_MODEL_BYTES = 800


def check_model(value: object) -> str:
    """A request's model name, where a model limit, allow-list or price applies to it."""
    if not isinstance(value, str) or not value:
        raise InvalidQuotaRequest("model", "must be a non-empty string")
    if len(value.encode()) > MAX_MODEL_BYTES:
        raise InvalidQuotaRequest("model", f"must be at most {MAX_MODEL_BYTES} bytes long")
    return value


def clock_time(value: float) -> float:
    """What an injected clock says, if it is a time the engine can compute with."""
    if not 0 <= value <= MAX_TIME:  # (NaN fails too)
        raise InvalidQuotaRequest(
            "clock", f"now() must return seconds since the epoch between 0 and {MAX_TIME:.0f}, got {value!r}"
        )
    return value


def quota_type(value: object) -> QuotaType:
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return QuotaType(value)
    except ValueError:
        choices = ", ".join(q.value for q in QuotaType)
        raise InvalidQuotaRequest(
            "quota_type", f"unknown quota type {value!r}; use one of {choices}"
        ) from None


def monthly_limits(values: object) -> dict[QuotaType, int]:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise InvalidQuotaRequest("monthly_limits", f"must be a mapping, got {type(values).__name__}")
    out: dict[QuotaType, int] = {}
    for name, limit in values.items():
        qt = quota_type(name)
        if qt not in (QuotaType.REQUESTS_PER_MONTH, QuotaType.TOKENS_PER_MONTH):
            raise InvalidQuotaRequest("monthly_limits", f"{qt.value} is not a monthly quota")
        out[qt] = amount(f"monthly_limits[{qt.value}]", limit)
    return out
