"""Constraint values parsed as Unleash's engine reads them: numbers, dates, semantic versions, RE2 regexes,
IP networks. Each returns ``None`` (or reports the problem) instead of raising, so a broken value evaluates
false rather than failing a request."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypeAlias

import re2

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
SemverKey: TypeAlias = tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]

# What Rust's f64 parser accepts (Unleash's engine is Rust): no whitespace, no digit separators.
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|inf|infinity|nan)", re.I)

_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)


def parse_number(text: str) -> float | None:
    if not _NUMBER.fullmatch(text):
        return None
    return float(text)


def parse_date(text: str) -> float | None:
    """Seconds since the epoch of an ISO 8601 / RFC 3339 date-time that names its time zone."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return when.timestamp()


def parse_semver(text: str) -> SemverKey | None:
    """A key ordered by semver precedence (build metadata ignored), or ``None`` if ``text`` is not semver.

    A release sorts after its pre-releases; pre-release identifiers compare numerically when numeric, and
    numeric ones sort before alphanumeric ones, a longer list after its prefix (semver.org, item 11).
    """
    match = _SEMVER.fullmatch(text)
    if match is None:
        return None
    major, minor, patch, pre, _build = match.groups()
    if pre is None:
        return (int(major), int(minor), int(patch), 1, ())
    ids = tuple((0, int(part)) if part.isdigit() else (1, part) for part in pre.split("."))
    return (int(major), int(minor), int(patch), 0, ids)


def _quiet() -> Any:
    # RE2 otherwise logs every pattern it refuses to stderr; a refusal is reported (or evaluates false) here.
    options = re2.Options()
    options.log_errors = False
    return options


_OPTIONS = _quiet()


def compile_regex(pattern: str, *, case_insensitive: bool = False) -> Any | None:
    """An RE2 regex (the syntax Unleash validates and its engine runs: no lookaround, no backreferences,
    POSIX classes, inline flags anywhere), or ``None`` when RE2 refuses it."""
    try:
        return re2.compile(("(?i)" if case_insensitive else "") + pattern, _OPTIONS)
    except re2.error:
        return None


def regex_error(pattern: str) -> str | None:
    try:
        re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else ""
        return (detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)) or "invalid"
    return None


def parse_cidrs(values: Iterable[str]) -> tuple[tuple[Network, ...], list[str]]:
    """``(networks, rejected)``: each value as an IP network (a bare address is a /32 or /128)."""
    networks: list[Network] = []
    bad: list[str] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            bad.append(value)
    return tuple(networks), bad
