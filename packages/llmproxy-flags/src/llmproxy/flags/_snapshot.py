"""The compiled, immutable flag set every process holds, and evaluation over it (pure: no I/O, no locks).

Compilation does all the work a definition allows ahead of time; evaluating a flag is then a dict lookup and a
few predicate calls. A new definition never changes a snapshot: the holder swaps in a new one (one reference
assignment, atomic under the GIL), so a reader sees either the old set or the new one, never a mix.
"""

from __future__ import annotations

import bisect
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from ._models import Feature, FeatureSet, Flag, Payload, Segment, Variant, as_feature
from ._rules import (
    VARIANT_SEED,
    Predicate,
    Values,
    _hash,
    _randrange,
    compile_strategy,
    disjunction,
    never,
    stickiness_reader,
)

Reason: TypeAlias = Literal["STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED", "DEFAULT"]


@dataclass(frozen=True, slots=True)
class VariantResult:
    """What ``variant()`` answers: Unleash's variant shape (``disabled`` when none applies)."""

    name: str
    enabled: bool
    feature_enabled: bool
    payload: Payload | None = None


DISABLED: Final = VariantResult("disabled", False, False)
#: The feature is on but has no variant for this context.
NO_VARIANT: Final = VariantResult("disabled", False, True)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A flag's value with the reason for it (what the OpenFeature provider reports)."""

    enabled: bool
    variant: VariantResult
    reason: Reason
    variant_reason: Reason


Chooser: TypeAlias = Callable[[Values], "tuple[VariantResult, Reason] | None"]


def compile_variants(variants: tuple[Variant, ...], group_id: str, stickiness: str | None) -> Chooser | None:
    """Overrides first, then ``bucket(group_id, sticky value, total weight, VARIANT_SEED)`` against the
    running sum of the weights (a random draw when the context has no sticky value)."""
    if not variants:
        return None
    results = tuple(VariantResult(v.name, True, True, v.payload) for v in variants)
    overrides = tuple(
        (o.context_name, frozenset(o.values), result)
        for v, result in zip(variants, results, strict=True)
        for o in v.overrides
    )
    cumulative: list[int] = []
    total = 0
    for v in variants:
        total += v.weight
        cumulative.append(total)
    prefix = group_id + ":"
    read = stickiness_reader(stickiness)
    split: Reason = "SPLIT" if sum(1 for v in variants if v.weight) > 1 else "STATIC"

    def choose(ctx: Values) -> tuple[VariantResult, Reason] | None:
        for name, values, result in overrides:
            if ctx.get(name) in values:
                return result, "TARGETING_MATCH"
        if total <= 0:
            return None
        seed = read(ctx)
        target = (
            _randrange(total) + 1 if seed is None else _hash(prefix + seed, VARIANT_SEED, False) % total + 1
        )
        return results[bisect.bisect_left(cumulative, target)], split

    return choose


def _strategy_reason(feature: Feature, index: int) -> Reason:
    strategy = feature.strategies[index]
    if strategy.constraints or strategy.segments or strategy.name in ("userWithId", "remoteAddress"):
        return "TARGETING_MATCH"
    params = strategy.parameters
    share = params.get("rollout") if strategy.name == "flexibleRollout" else params.get("percentage")
    if strategy.name != "default" and strategy.name != "applicationHostname" and share != "100":
        return "SPLIT"
    return "STATIC"


class CompiledFeature:
    """One feature, compiled: ``check`` answers "is it on", ``choose`` picks its variant."""

    __slots__ = ("_dependencies", "_feature_variants", "_strategies", "check", "definition", "name")

    def __init__(self, feature: Feature, segments: Mapping[int, Segment], hostname: str) -> None:
        self.name = feature.name
        self.definition = feature
        self._dependencies: tuple[Predicate, ...] = ()
        strategies = tuple(compile_strategy(s, feature.name, segments, hostname) for s in feature.strategies)
        self._strategies = tuple(
            (
                rule,
                compile_variants(
                    s.variants, s.parameters.get("groupId") or feature.name, s.parameters.get("stickiness")
                ),
                _strategy_reason(feature, i),
            )
            for i, (s, rule) in enumerate(zip(feature.strategies, strategies, strict=True))
        )
        self._feature_variants = compile_variants(
            feature.variants, feature.name, feature.variants[0].stickiness if feature.variants else None
        )
        rule = disjunction(strategies) if strategies else None
        if not feature.enabled:
            self.check: Predicate = never
        else:
            self.check = rule or (lambda _ctx: True)

    def link(self, parents: Mapping[str, CompiledFeature]) -> None:
        """Add the dependency checks (second pass: every parent is compiled by now)."""
        deps = self.definition.dependencies
        if not deps or self.check is never:
            return
        checks = tuple(self._dependency(d.feature, d.enabled, d.variants, parents) for d in deps)
        own = self.check
        if never in checks:
            self.check = never
            return
        self._dependencies = checks

        def check(ctx: Values) -> bool:
            for dependency in checks:
                if not dependency(ctx):
                    return False
            return own(ctx)

        self.check = check

    @staticmethod
    def _dependency(
        name: str, enabled: bool, variants: tuple[str, ...], parents: Mapping[str, CompiledFeature]
    ) -> Predicate:
        parent = parents.get(name)
        # Unleash evaluates one level only: a parent that has parents of its own makes the child off.
        if parent is None or parent.definition.dependencies:
            return never
        parent_on = parent.check
        if not enabled:
            return lambda ctx: not parent_on(ctx)
        if variants:
            wanted = frozenset(variants)
            return lambda ctx: parent_on(ctx) and parent.choose(ctx)[0].name in wanted
        return parent_on

    def choose(self, ctx: Values) -> tuple[VariantResult, Reason]:
        """The variant of an enabled feature: the first matching strategy's own variants if it has any,
        else the feature's (``NO_VARIANT`` when neither gives one)."""
        for rule, chooser, _ in self._strategies:
            if rule(ctx):
                if chooser is not None:
                    return chooser(ctx) or (NO_VARIANT, "DEFAULT")
                break
        if self._feature_variants is not None:
            return self._feature_variants(ctx) or (NO_VARIANT, "DEFAULT")
        return NO_VARIANT, "DEFAULT"

    def explain(self, ctx: Values) -> Evaluation:
        if not self.definition.enabled:
            return Evaluation(False, DISABLED, "DISABLED", "DISABLED")
        if not self.check(ctx):
            return Evaluation(False, DISABLED, "DEFAULT", "DEFAULT")
        reason: Reason = "STATIC"
        for rule, _, strategy_reason in self._strategies:
            if rule(ctx):
                reason = strategy_reason
                break
        variant, variant_reason = self.choose(ctx)
        return Evaluation(True, variant, reason, variant_reason)


def _local_hostname() -> str:
    return socket.gethostname()


class Snapshot:
    """An immutable, compiled flag set. ``version`` names the stored flag set it was built from."""

    __slots__ = ("feature_set", "features", "version")

    def __init__(self, feature_set: FeatureSet, version: str = "", *, hostname: str | None = None) -> None:
        self.feature_set = feature_set
        self.version = version
        segments = {s.id: s for s in feature_set.segments}
        host = _local_hostname() if hostname is None else hostname
        compiled = {f.name: CompiledFeature(f, segments, host) for f in feature_set.features}
        for feature in compiled.values():
            feature.link(compiled)
        self.features: Mapping[str, CompiledFeature] = compiled

    @classmethod
    def of(
        cls, flags: Iterable[Feature | Flag], version: str = "", *, hostname: str | None = None
    ) -> Snapshot:
        """A snapshot of these features / simple flags (validated as definitions)."""
        return cls(FeatureSet(features=tuple(as_feature(f) for f in flags)), version, hostname=hostname)

    @classmethod
    def empty(cls, version: str = "") -> Snapshot:
        return cls(FeatureSet(), version, hostname="")

    def is_enabled(self, name: str, ctx: Values, default: bool = False) -> bool:
        """Is ``name`` on for this context? ``default`` when the snapshot has no such flag."""
        feature = self.features.get(name)
        if feature is None:
            return default
        return feature.check(ctx)

    def variant(self, name: str, ctx: Values) -> VariantResult:
        feature = self.features.get(name)
        if feature is None or not feature.check(ctx):
            return DISABLED
        return feature.choose(ctx)[0]

    def explain(self, name: str, ctx: Values) -> Evaluation | None:
        """The value and its reason, or ``None`` when there is no such flag."""
        feature = self.features.get(name)
        return None if feature is None else feature.explain(ctx)

    def changed(self, other: Snapshot) -> list[str]:
        """Names of the flags whose definitions differ between ``self`` and ``other`` (added, removed or
        changed); a segment's change counts for every flag that uses it."""
        mine, theirs = self.features, other.features
        names = set(mine) | set(theirs)
        seg_a = {s.id: s for s in self.feature_set.segments}
        seg_b = {s.id: s for s in other.feature_set.segments}
        moved = {i for i in set(seg_a) | set(seg_b) if seg_a.get(i) != seg_b.get(i)}

        def differs(a: CompiledFeature | None, b: CompiledFeature | None) -> bool:
            if a is None or b is None or a.definition != b.definition:
                return True
            return bool(moved) and any(set(s.segments) & moved for s in a.definition.strategies)

        return [name for name in sorted(names) if differs(mine.get(name), theirs.get(name))]

    def __contains__(self, name: object) -> bool:
        return name in self.features

    def __iter__(self) -> Iterator[str]:
        return iter(self.features)

    def __len__(self) -> int:
        return len(self.features)

    def __repr__(self) -> str:
        return f"<Snapshot version={self.version!r} flags={len(self.features)}>"
