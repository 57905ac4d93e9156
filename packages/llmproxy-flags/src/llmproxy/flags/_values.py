"""Constraint values parsed as Unleash's engine reads them: numbers, dates, semantic versions, RE2 regexes,
IP networks. Each returns ``None`` (or reports the problem) instead of raising, so a broken value evaluates
false rather than failing a request."""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeAlias, TypeVar

import re2

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
SemverKey: TypeAlias = tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]

_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)


# Parsed values are memoised: a context's versions, dates and numbers repeat from request to request, and a
# cache hit (~0.1 us) is a tenth of a parse. Failures (None) are cached too. A plain dict emptied when full,
# not functools.lru_cache: an LRU miss (its list kept in order, an entry evicted) cost ~1 us on top of the
# parse, measured, which values never seen before (a new version, a new seat count) pay on every call.

MEMO_SIZE = 4096
_MISS: Any = object()
T = TypeVar("T")


def _memoised(parse: Callable[[str], T]) -> Callable[[str], T]:
    cache: dict[str, T] = {}
    get = cache.get

    @functools.wraps(parse)
    def memo(text: str) -> T:
        value = get(text, _MISS)
        if value is _MISS:
            value = parse(text)
            if len(cache) >= MEMO_SIZE:
                cache.clear()  # (atomic in CPython: another thread's get sees the old dict or an empty one)
            cache[text] = value
        return value  # type: ignore[no-any-return]

    return memo


@_memoised
def parse_number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    # float() also takes what Rust's parser refuses: surrounding whitespace and digit separators.
    if "_" in text or text[:1].isspace() or text[-1:].isspace():
        return None
    return number


@_memoised
def parse_date(text: str) -> float | None:
    """Seconds since the epoch of an ISO 8601 / RFC 3339 date-time that names its time zone."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return when.timestamp()


@_memoised
def parse_semver(text: str) -> SemverKey | None:
    """A key ordered by semver precedence (build metadata ignored), or ``None`` if ``text`` is not semver.

    A release sorts after its pre-releases; pre-release identifiers compare numerically when numeric, and
    numeric ones sort before alphanumeric ones, a longer list after its prefix (semver.org, item 11).
    """
    if text.isascii():
        parts = text.split(".")
        if len(parts) == 3:
            major, minor, patch = parts
            # A plain release (most versions) without the regex: digits only, no leading zeros.
            if (
                major.isdigit()
                and minor.isdigit()
                and patch.isdigit()
                and (major[0] != "0" or major == "0")
                and (minor[0] != "0" or minor == "0")
                and (patch[0] != "0" or patch == "0")
            ):
                return (int(major), int(minor), int(patch), 1, ())
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


def regex_matcher(pattern: str, *, case_insensitive: bool = False) -> Callable[[str], bool] | None:
    """``text -> does the regex match anywhere in it`` (``None`` when RE2 refuses the pattern).

    Calls the compiled RE2 object under google-re2's wrapper directly when it is there: the wrapper's
    ``search`` maps byte offsets back to characters and builds a match object, ~3 us a call against ~0.6 us
    for the bare match (bench/bench_flags.py), and a constraint only needs a yes or no.
    """
    compiled = compile_regex(pattern, case_insensitive=case_insensitive)
    if compiled is None:
        return None
    search = compiled.search
    raw = getattr(compiled, "_regexp", None)
    anchor = getattr(getattr(type(raw), "Anchor", None), "UNANCHORED", None)
    if raw is None or anchor is None:
        return lambda text: search(text) is not None
    match = raw.Match

    def matches(text: str) -> bool:
        try:
            data = text.encode()
        except UnicodeEncodeError:  # a lone surrogate: not text RE2 can read
            return False
        return bool(match(anchor, data, 0, len(data))[0][0] != -1)

    # A wrapper whose internals moved would disagree here; then its public search is used.
    probe = ("", "a", "user123", pattern)
    if all(matches(t) == (search(t) is not None) for t in probe):
        return matches
    return lambda text: search(text) is not None


def regex_error(pattern: str) -> str | None:
    try:
        re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else ""
        return (detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)) or "invalid"
    return None


def parse_address(text: str) -> tuple[int, int] | None:
    """``(4 or 6, the address as an integer)``, or ``None``. ``inet_pton`` accepts what Unleash's engine
    accepts (no leading zeros, no zone ids) at a tenth of ``ipaddress.ip_address``'s cost."""
    try:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text))
    except OSError:
        pass
    try:
        return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, text))
    except OSError:
        return None


def network_masks(networks: Iterable[Network]) -> tuple[tuple[int, int, int], ...]:
    """``(version, network as int, mask as int)`` per network, for ``address & mask == network``."""
    return tuple((n.version, int(n.network_address), int(n.netmask)) for n in networks)


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
