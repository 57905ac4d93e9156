"""Constraints and strategies compiled to predicates over a context's values.

A context is a flat ``dict[str, str]``: Unleash's own fields under their names (``userId``, ``sessionId``,
``remoteAddress``, ``environment``, ``appName``, ``currentTime``) and every custom property under its name.
Everything a predicate can work out ahead of time (value sets, parsed numbers, dates and versions, compiled
regexes, networks, hash prefixes) is worked out here, once per snapshot, so evaluating is a few dict lookups
and comparisons. Anything unknown or unparsable compiles to "false", as the Unleash client specification
requires.
"""

from __future__ import annotations

import operator as op
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeAlias

import mmh3

from ._models import Constraint, Segment, Strategy
from ._values import (
    Network,
    network_masks,
    parse_address,
    parse_cidrs,
    parse_date,
    parse_number,
    parse_semver,
    regex_matcher,
)

Values: TypeAlias = Mapping[str, str]
Predicate: TypeAlias = Callable[[Values], bool]

VARIANT_SEED: Final = 86028157
_hash = mmh3.hash
_randrange = random.randrange


def bucket(group_id: str, identifier: str, modulus: int = 100, seed: int = 0) -> int:
    """Unleash's normalised hash: murmur3 x86_32 of ``"{group_id}:{identifier}"`` (UTF-8) mod ``modulus``,
    plus 1 (so 1..modulus)."""
    return _hash(f"{group_id}:{identifier}", seed, False) % modulus + 1


def always(_values: Values) -> bool:
    return True


def never(_values: Values) -> bool:
    return False


def constant(result: bool) -> Predicate:
    return always if result else never


# -- constraints ---------------------------------------------------------------------------------------------


def compile_constraint(c: Constraint) -> Predicate:
    """The constraint as a predicate; an unknown operator is false whether inverted or not (as in Unleash)."""
    builder = _OPERATORS.get(c.operator)
    if builder is None:
        return never
    return builder(c, c.context_name, c.inverted)


def _in(c: Constraint, name: str, inv: bool) -> Predicate:
    values = frozenset(c.values)
    if not values:
        return constant(inv)

    def check(ctx: Values) -> bool:
        return (ctx.get(name) in values) is not inv

    return check


def _not_in(c: Constraint, name: str, inv: bool) -> Predicate:
    values = frozenset(c.values)
    if not values:
        return constant(not inv)

    def check(ctx: Values) -> bool:
        return (ctx.get(name) not in values) is not inv

    return check


def _strings(method: str) -> Callable[[Constraint, str, bool], Predicate]:
    def build(c: Constraint, name: str, inv: bool) -> Predicate:
        fold = c.case_insensitive
        wanted = tuple(v.lower() for v in c.values) if fold else tuple(c.values)
        if method == "contains":

            def contains(ctx: Values) -> bool:
                value = ctx.get(name)
                if value is None:
                    return inv
                if fold:
                    value = value.lower()
                for part in wanted:
                    if part in value:
                        return not inv
                return inv

            return contains
        # str.startswith / endswith take a tuple: one C call for every value.
        test = str.startswith if method == "startswith" else str.endswith

        def affix(ctx: Values) -> bool:
            value = ctx.get(name)
            if value is None:
                return inv
            return test(value.lower() if fold else value, wanted) is not inv

        return affix

    return build


def _ordinal(
    parse: Callable[[str], Any], compare: Callable[[Any, Any], bool]
) -> Callable[[Constraint, str, bool], Predicate]:
    def build(c: Constraint, name: str, inv: bool) -> Predicate:
        target = parse(c.value) if c.value is not None else None
        if target is None:
            return never

        def check(ctx: Values) -> bool:
            raw = ctx.get(name)
            if raw is None:
                return inv
            value = parse(raw)
            if value is None:
                return inv
            return compare(value, target) is not inv

        return check

    return build


def _num_eq(value: float, target: float) -> bool:
    return abs(value - target) < 2.220446049250313e-16


def _dates(compare: Callable[[float, float], bool]) -> Callable[[Constraint, str, bool], Predicate]:
    def build(c: Constraint, name: str, inv: bool) -> Predicate:
        target = parse_date(c.value) if c.value is not None else None
        if target is None:
            return never

        def check(ctx: Values) -> bool:
            raw = ctx.get(name)
            # Without a currentTime in the context, "now" is meant (the engine does the same).
            value = time.time() if raw is None else parse_date(raw)
            if value is None:
                return inv
            return compare(value, target) is not inv

        return check

    return build


def _regex(c: Constraint, name: str, inv: bool) -> Predicate:
    matches = regex_matcher(c.value, case_insensitive=c.case_insensitive) if c.value is not None else None
    if matches is None:
        return never

    def check(ctx: Values) -> bool:
        value = ctx.get(name)
        if value is None:
            return inv
        return matches(value) is not inv

    return check


def _addresses(networks: Sequence[Network], name: str, inv: bool) -> Predicate:
    if not networks:
        return constant(inv)
    masks = network_masks(networks)

    def check(ctx: Values) -> bool:
        raw = ctx.get(name)
        if raw is None:
            return inv
        parsed = parse_address(raw)
        if parsed is None:
            return inv
        version, address = parsed
        for net_version, network, mask in masks:
            if net_version == version and address & mask == network:
                return not inv
        return inv

    return check


def _in_cidr(c: Constraint, name: str, inv: bool) -> Predicate:
    networks, _ = parse_cidrs(c.values)  # entries that are not networks are ignored, as in Unleash
    return _addresses(networks, name, inv)


_OPERATORS: dict[str, Callable[[Constraint, str, bool], Predicate]] = {
    "IN": _in,
    "NOT_IN": _not_in,
    "STR_STARTS_WITH": _strings("startswith"),
    "STR_ENDS_WITH": _strings("endswith"),
    "STR_CONTAINS": _strings("contains"),
    "NUM_EQ": _ordinal(parse_number, _num_eq),
    "NUM_GT": _ordinal(parse_number, op.gt),
    "NUM_GTE": _ordinal(parse_number, op.ge),
    "NUM_LT": _ordinal(parse_number, op.lt),
    "NUM_LTE": _ordinal(parse_number, op.le),
    "DATE_AFTER": _dates(op.gt),
    "DATE_BEFORE": _dates(op.lt),
    "SEMVER_EQ": _ordinal(parse_semver, op.eq),
    "SEMVER_GT": _ordinal(parse_semver, op.gt),
    "SEMVER_GTE": _ordinal(parse_semver, op.ge),
    "SEMVER_LT": _ordinal(parse_semver, op.lt),
    "SEMVER_LTE": _ordinal(parse_semver, op.le),
    "REGEX": _regex,
    "IN_CIDR": _in_cidr,
}


# -- strategies ----------------------------------------------------------------------------------------------


def stickiness_reader(stickiness: str | None) -> Callable[[Values], str | None]:
    """What a rollout or a variant hashes: ``default`` is userId, else sessionId (``None`` when neither:
    the caller then draws at random); any other name is read from the context as is."""
    if stickiness is None or stickiness == "default":

        def default(ctx: Values) -> str | None:
            value = ctx.get("userId")
            return ctx.get("sessionId") if value is None else value

        return default
    if stickiness == "random":
        return lambda _ctx: None
    return lambda ctx: ctx.get(stickiness)


def _percentage(raw: str | None) -> int | None:
    if raw is None or not raw.strip().isdigit():
        return None
    return min(int(raw.strip()), 100)


def _rollout(percentage: int, group_id: str, stickiness: str | None, *, random_fallback: bool) -> Predicate:
    """``bucket(group_id, sticky value) <= percentage``; with no sticky value, a random draw when
    ``random_fallback`` (flexibleRollout's ``default``/``random``), else false (a required context field)."""
    if percentage <= 0:
        return never
    prefix = group_id + ":"
    read = stickiness_reader(stickiness)
    whole = percentage >= 100

    def check(ctx: Values) -> bool:
        value = read(ctx)
        if value is None:
            return random_fallback and _randrange(100) < percentage
        if whole:
            return True
        return _hash(prefix + value, 0, False) % 100 < percentage

    return check


def _ids(raw: str | None) -> frozenset[str]:
    return frozenset(part.strip() for part in (raw or "").split(",") if part.strip())


def strategy_rule(strategy: Strategy, feature_name: str, hostname: str) -> Predicate | None:
    """The strategy's own rule (``None`` = always true), by its name and parameters."""
    name, params = strategy.name, strategy.parameters
    if name == "default":
        return None
    if name == "flexibleRollout":
        percentage = _percentage(params.get("rollout"))
        if percentage is None:
            return never
        stickiness = params.get("stickiness") or "default"
        group_id = params.get("groupId") or feature_name
        random_fallback = stickiness in ("default", "random")
        return _rollout(percentage, group_id, stickiness, random_fallback=random_fallback)
    if name in ("gradualRolloutUserId", "gradualRolloutSessionId"):
        percentage = _percentage(params.get("percentage"))
        group = params.get("groupId")
        if percentage is None or not group:
            return never
        field = "userId" if name == "gradualRolloutUserId" else "sessionId"
        return _rollout(percentage, group, field, random_fallback=False)
    if name == "gradualRolloutRandom":
        percentage = _percentage(params.get("percentage"))
        if percentage is None or percentage <= 0:
            return never
        return always if percentage >= 100 else (lambda _ctx: _randrange(100) < percentage)
    if name == "userWithId":
        ids = _ids(params.get("userIds"))
        return (lambda ctx: ctx.get("userId") in ids) if ids else never
    if name == "remoteAddress":
        networks, _ = parse_cidrs(part for part in (params.get("IPs") or "").split(",") if part.strip())
        return _addresses(networks, "remoteAddress", False)
    if name == "applicationHostname":
        hosts = {h.lower() for h in _ids(params.get("hostNames"))}
        return constant(hostname.lower() in hosts)
    return never  # a custom strategy this process has no implementation of


def compile_strategy(
    strategy: Strategy, feature_name: str, segments: Mapping[int, Segment], hostname: str
) -> Predicate:
    """The strategy's rule and all of its constraints, its segments' constraints after its own."""
    if strategy.disabled:
        return never
    constraints = list(strategy.constraints)
    for segment_id in strategy.segments:
        segment = segments.get(segment_id)
        if segment is None:
            return never  # a strategy naming a segment nobody sent is off, as in Unleash
        constraints.extend(segment.constraints)
    checks = tuple(compile_constraint(c) for c in constraints)
    if never in checks:
        return never
    checks = tuple(c for c in checks if c is not always)
    return conjunction(checks, strategy_rule(strategy, feature_name, hostname))


def conjunction(checks: tuple[Predicate, ...], rule: Predicate | None) -> Predicate:
    if rule is never:
        return never
    if not checks:
        return rule or always
    if rule is None or rule is always:
        if len(checks) == 1:
            return checks[0]

        def all_of(ctx: Values) -> bool:
            # A plain loop: all() over a generator costs a frame per call on the hot path.
            for check in checks:  # noqa: SIM110
                if not check(ctx):
                    return False
            return True

        return all_of

    def all_then_rule(ctx: Values) -> bool:
        for check in checks:
            if not check(ctx):
                return False
        return rule(ctx)

    return all_then_rule


def disjunction(rules: Sequence[Predicate]) -> Predicate:
    rules = [r for r in rules if r is not never]
    if not rules:
        return never
    if always in rules:
        return always
    if len(rules) == 1:
        return rules[0]
    checks = tuple(rules)

    def any_of(ctx: Values) -> bool:
        for check in checks:  # noqa: SIM110 (see all_of)
            if check(ctx):
                return True
        return False

    return any_of
