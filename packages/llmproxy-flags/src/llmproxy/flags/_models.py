"""Unleash's feature model (pydantic), and the seed's simple ``Flag`` as a shorthand over it.

Two validation modes share one set of models:

- *definition* (the default): what llmproxy accepts as a write. Unknown operators and strategies, regexes RE2
  cannot compile, unparsable numbers / dates / semvers, variant weights that do not sum to 1000 and oversized
  definitions are rejected, each error naming its field.
- *client* (``FeatureSet.from_unleash``, and what storage reads back): what an Unleash SDK accepts from the
  client API. Anything unknown or broken is kept and evaluates false, as the client specification requires.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

from ._values import parse_cidrs, parse_date, parse_number, parse_semver, regex_error

CLIENT_MODE: Final = {"llmproxy.flags.mode": "client"}

OPERATORS: Final = frozenset(
    {
        "IN",
        "NOT_IN",
        "STR_STARTS_WITH",
        "STR_ENDS_WITH",
        "STR_CONTAINS",
        "NUM_EQ",
        "NUM_GT",
        "NUM_GTE",
        "NUM_LT",
        "NUM_LTE",
        "DATE_AFTER",
        "DATE_BEFORE",
        "SEMVER_EQ",
        "SEMVER_GT",
        "SEMVER_GTE",
        "SEMVER_LT",
        "SEMVER_LTE",
        "REGEX",
        "IN_CIDR",
    }
)
#: Operators that read ``value`` (one value); the others read ``values``.
SINGLE_VALUE_OPERATORS: Final = frozenset(
    op for op in OPERATORS if op.split("_")[0] in ("NUM", "DATE", "SEMVER") or op == "REGEX"
)

STRATEGIES: Final = frozenset(
    {
        "default",
        "userWithId",
        "gradualRolloutUserId",
        "gradualRolloutSessionId",
        "gradualRolloutRandom",
        "remoteAddress",
        "applicationHostname",
        "flexibleRollout",
    }
)
PAYLOAD_TYPES: Final = frozenset({"string", "json", "csv", "number"})
TOTAL_WEIGHT: Final = 1000

# Limits of a definition (Unleash has similar resource limits): they bound what one write can make every
# process compile and hold, and what a request may cost to evaluate.
MAX_STRATEGIES: Final = 30
MAX_CONSTRAINTS: Final = 30
MAX_SEGMENTS_PER_STRATEGY: Final = 30
MAX_VALUES: Final = 10_000
MAX_VARIANTS: Final = 100
MAX_DEPENDENCIES: Final = 30
MAX_FEATURES: Final = 10_000
MAX_VALUE_LENGTH: Final = 1_000
MAX_PAYLOAD_LENGTH: Final = 100_000

# A key is used in URL paths (`/admin/flags/{key}`) and log lines: no whitespace, control characters or '/'.
_KEY = re.compile(r"^[^\s/\x00-\x1f\x7f]{1,200}$")


def _is_client(info: ValidationInfo) -> bool:
    context = info.context
    return isinstance(context, Mapping) and context.get("llmproxy.flags.mode") == "client"


def _at_most(value: Any, limit: int, what: str) -> Any:
    # Runs before the items are validated, so an oversized list is refused without parsing it.
    if isinstance(value, list | tuple) and len(value) > limit:
        raise ValueError(f"at most {limit} {what} (got {len(value)})")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        alias_generator=to_camel,
        populate_by_name=True,
        coerce_numbers_to_str=True,
    )

    def unleash(self) -> dict[str, Any]:
        """The Unleash client-API JSON shape (camelCase, unset optionals left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Payload(_Model):
    """A variant's payload: ``type`` is ``string``, ``json``, ``csv`` or ``number``; ``value`` is text."""

    type: str
    value: str = Field(max_length=MAX_PAYLOAD_LENGTH)

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> Payload:
        if _is_client(info):
            return self
        if self.type not in PAYLOAD_TYPES:
            raise ValueError(f"type must be one of {sorted(PAYLOAD_TYPES)} (got {self.type!r})")
        if self.type == "json":
            try:
                json.loads(self.value)
            except ValueError as exc:
                raise ValueError(f"value is not JSON: {exc}") from None
        elif self.type == "number" and parse_number(self.value) is None:
            raise ValueError(f"value is not a number: {self.value!r}")
        return self


class Override(_Model):
    """Give this variant to every context whose ``context_name`` is one of ``values``."""

    context_name: str = Field(min_length=1, max_length=200)
    values: tuple[str, ...] = ()

    @field_validator("values", mode="before")
    @classmethod
    def _bounded(cls, value: Any, info: ValidationInfo) -> Any:
        return value if _is_client(info) else _at_most(value, MAX_VALUES, "values")


class Variant(_Model):
    """A variant of a feature or of a strategy; ``weight`` is out of the total (1000 in definitions)."""

    name: str = Field(min_length=1, max_length=200)
    weight: int = Field(ge=0)
    weight_type: str | None = None
    stickiness: str | None = None
    payload: Payload | None = None
    overrides: tuple[Override, ...] = ()


def _check_variants(variants: tuple[Variant, ...], info: ValidationInfo) -> tuple[Variant, ...]:
    if _is_client(info) or not variants:
        return variants
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError("variant names must be unique")
    total = sum(v.weight for v in variants)
    if total != TOTAL_WEIGHT:
        raise ValueError(f"variant weights must sum to {TOTAL_WEIGHT} (got {total})")
    return variants


class Constraint(_Model):
    """``context_name operator value(s)``, optionally ``inverted`` and ``case_insensitive`` (string ops)."""

    context_name: str = Field(min_length=1, max_length=200)
    operator: str
    values: tuple[str, ...] = ()
    value: str | None = Field(default=None, max_length=MAX_VALUE_LENGTH)
    inverted: bool = False
    case_insensitive: bool = False

    @field_validator("values", mode="before")
    @classmethod
    def _bounded(cls, value: Any, info: ValidationInfo) -> Any:
        return value if _is_client(info) else _at_most(value, MAX_VALUES, "values")

    @field_validator("operator")
    @classmethod
    def _known_operator(cls, value: str, info: ValidationInfo) -> str:
        if not _is_client(info) and value not in OPERATORS:
            raise ValueError(f"unknown operator {value!r}; expected one of {', '.join(sorted(OPERATORS))}")
        return value

    @model_validator(mode="after")
    def _parsable(self, info: ValidationInfo) -> Constraint:
        if _is_client(info):
            return self
        op = self.operator
        if op in SINGLE_VALUE_OPERATORS:
            if self.value is None:
                raise ValueError(f"value: {op} needs a value")
            family = op.split("_")[0]
            problem: str | None = None
            if family == "NUM" and parse_number(self.value) is None:
                problem = "is not a number"
            elif family == "DATE" and parse_date(self.value) is None:
                problem = "is not an ISO 8601 date-time with a time zone"
            elif family == "SEMVER" and parse_semver(self.value) is None:
                problem = "is not a semantic version (e.g. 1.2.3 or 2.0.0-rc.1)"
            elif op == "REGEX":
                error = regex_error(self.value)
                problem = f"is not a regular expression RE2 accepts: {error}" if error else None
            if problem:
                raise ValueError(f"value {self.value!r} {problem}")
        elif op == "IN_CIDR":
            _, bad = parse_cidrs(self.values)
            if bad:
                raise ValueError(f"values: not IP addresses or CIDR ranges: {', '.join(map(repr, bad))}")
        return self


class Segment(_Model):
    """Constraints shared by strategies that name the segment's ``id``."""

    id: int
    name: str | None = None
    constraints: tuple[Constraint, ...] = ()

    @field_validator("constraints", mode="before")
    @classmethod
    def _bounded(cls, value: Any, info: ValidationInfo) -> Any:
        return value if _is_client(info) else _at_most(value, MAX_CONSTRAINTS, "constraints")


def _percentage(parameters: Mapping[str, str], name: str) -> str | None:
    raw = parameters.get(name)
    if raw is None or not raw.isdigit() or int(raw) > 100:
        return f"parameters.{name} must be a whole number from 0 to 100 (got {raw!r})"
    return None


class Strategy(_Model):
    """An activation strategy: its own rule (by ``name`` and ``parameters``) and its constraints and segments,
    all of which must hold. A feature is on when any of its strategies is."""

    name: str
    parameters: dict[str, str] = Field(default_factory=dict)
    constraints: tuple[Constraint, ...] = ()
    segments: tuple[int, ...] = ()
    variants: tuple[Variant, ...] = ()
    disabled: bool = False

    @field_validator("parameters", mode="before")
    @classmethod
    def _no_nulls(cls, value: Any) -> Any:
        # The Unleash API sends null for parameters it has no value for; absent and null mean the same.
        if isinstance(value, Mapping):
            return {k: v for k, v in value.items() if v is not None}
        return {} if value is None else value

    @field_validator("constraints", "segments", "variants", mode="before")
    @classmethod
    def _bounded(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return ()
        if _is_client(info):
            return value
        limits = {
            "constraints": MAX_CONSTRAINTS,
            "segments": MAX_SEGMENTS_PER_STRATEGY,
            "variants": MAX_VARIANTS,
        }
        field = info.field_name or ""
        return _at_most(value, limits[field], field)

    @field_validator("name")
    @classmethod
    def _known_strategy(cls, value: str, info: ValidationInfo) -> str:
        if not _is_client(info) and value not in STRATEGIES:
            raise ValueError(f"unknown strategy {value!r}; expected one of {', '.join(sorted(STRATEGIES))}")
        return value

    @field_validator("variants")
    @classmethod
    def _weights(cls, value: tuple[Variant, ...], info: ValidationInfo) -> tuple[Variant, ...]:
        return _check_variants(value, info)

    @model_validator(mode="after")
    def _parameters(self, info: ValidationInfo) -> Strategy:
        if _is_client(info):
            return self
        params = self.parameters
        problem: str | None = None
        if self.name == "flexibleRollout":
            problem = _percentage(params, "rollout")
            if problem is None and params.get("stickiness", "default") == "":
                problem = "parameters.stickiness must not be empty"
        elif self.name in ("gradualRolloutUserId", "gradualRolloutSessionId"):
            problem = _percentage(params, "percentage")
            if problem is None and not params.get("groupId"):
                problem = f"parameters.groupId is required by {self.name}"
        elif self.name == "gradualRolloutRandom":
            problem = _percentage(params, "percentage")
        elif self.name == "userWithId" and not params.get("userIds", "").strip():
            problem = "parameters.userIds must list at least one user id"
        elif self.name == "remoteAddress":
            _, bad = parse_cidrs(ip.strip() for ip in params.get("IPs", "").split(","))
            if not params.get("IPs", "").strip() or bad:
                problem = f"parameters.IPs must be a comma-separated list of IPs / CIDR ranges (bad: {bad})"
        if problem:
            raise ValueError(problem)
        return self


class Dependency(_Model):
    """This feature needs ``feature`` to be on (or off, with ``enabled=False``), and, when ``variants`` are
    listed, to resolve to one of them."""

    feature: str = Field(min_length=1)
    enabled: bool = True
    variants: tuple[str, ...] = ()

    @field_validator("variants", mode="before")
    @classmethod
    def _no_null(cls, value: Any) -> Any:
        return () if value is None else value


class Feature(_Model):
    """An Unleash feature: off unless ``enabled``; then on when it has no strategies or any strategy is on,
    and every dependency holds."""

    name: str = Field(min_length=1)
    enabled: bool = True
    description: str | None = Field(default=None, max_length=10_000)
    type: str | None = None
    project: str | None = None
    strategies: tuple[Strategy, ...] = ()
    variants: tuple[Variant, ...] = ()
    dependencies: tuple[Dependency, ...] = ()
    impression_data: bool = False

    @field_validator("strategies", "variants", "dependencies", mode="before")
    @classmethod
    def _bounded(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return ()
        if _is_client(info):
            return value
        limits = {"strategies": MAX_STRATEGIES, "variants": MAX_VARIANTS, "dependencies": MAX_DEPENDENCIES}
        field = info.field_name or ""
        return _at_most(value, limits[field], field)

    @field_validator("name")
    @classmethod
    def _key(cls, value: str, info: ValidationInfo) -> str:
        if not _is_client(info) and not _KEY.match(value):
            raise ValueError("a flag key is 1-200 characters without whitespace, control characters or '/'")
        return value

    @field_validator("variants")
    @classmethod
    def _weights(cls, value: tuple[Variant, ...], info: ValidationInfo) -> tuple[Variant, ...]:
        return _check_variants(value, info)

    @model_validator(mode="after")
    def _not_self_dependent(self, info: ValidationInfo) -> Feature:
        if not _is_client(info) and any(d.feature == self.name for d in self.dependencies):
            raise ValueError("dependencies: a feature cannot depend on itself")
        return self


class FeatureSet(_Model):
    """The whole flag set: Unleash's client-API document (``{"version", "features", "segments"}``)."""

    version: int = 2
    features: tuple[Feature, ...] = ()
    segments: tuple[Segment, ...] = ()

    @field_validator("features", mode="before")
    @classmethod
    def _bounded(cls, value: Any, info: ValidationInfo) -> Any:
        return value if _is_client(info) else _at_most(value, MAX_FEATURES, "features")

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> FeatureSet:
        if _is_client(info):
            return self
        check_consistency(self.features, self.segments)
        return self

    @classmethod
    def from_unleash(cls, document: Mapping[str, Any] | str | bytes) -> FeatureSet:
        """Read an Unleash client-API document as an SDK does: unknown operators and strategies are kept
        (and evaluate false) rather than rejected."""
        if isinstance(document, str | bytes):
            return cls.model_validate_json(document, context=CLIENT_MODE)
        return cls.model_validate(document, context=CLIENT_MODE)

    def feature(self, name: str) -> Feature | None:
        return next((f for f in self.features if f.name == name), None)


def check_consistency(features: Iterable[Feature], segments: Iterable[Segment]) -> None:
    """Raise ``ValueError`` unless names and segment ids are unique, every strategy's segments exist, and
    every dependency names an existing feature that has no dependencies of its own (Unleash evaluates only one
    level: a child of a child is always off)."""
    by_name: dict[str, Feature] = {}
    for feature in features:
        if feature.name in by_name:
            raise ValueError(f"features: {feature.name!r} appears twice")
        by_name[feature.name] = feature
    segment_ids = [s.id for s in segments]
    if len(set(segment_ids)) != len(segment_ids):
        raise ValueError("segments: ids must be unique")
    known_segments = set(segment_ids)
    for feature in by_name.values():
        for i, strategy in enumerate(feature.strategies):
            missing = [s for s in strategy.segments if s not in known_segments]
            if missing:
                raise ValueError(f"{feature.name}: strategies.{i}.segments: no segment {missing[0]}")
        for dep in feature.dependencies:
            parent = by_name.get(dep.feature)
            if parent is None:
                raise ValueError(f"{feature.name}: dependencies: no feature {dep.feature!r}")
            if parent.dependencies:
                raise ValueError(
                    f"{feature.name}: dependencies: {dep.feature!r} has dependencies itself "
                    "(only one level is evaluated)"
                )


def children_of(name: str, features: Iterable[Feature]) -> list[str]:
    """Names of the features that depend on ``name``."""
    return [f.name for f in features if any(d.feature == name for d in f.dependencies)]


# -- the seed's simple flag ---------------------------------------------------------------------------------

TENANT_PROPERTY: Final = "tenant_id"


class Flag(BaseModel):
    """The seed's flag: off globally -> off; tenant in ``enabled_for_tenants`` -> on; ``rollout_percentage``
    > 0 -> on for that share of tenants (murmur3 of ``"{key}:{tenant}"``); else ``default_value``.

    Stored and evaluated as the general model: see :meth:`to_feature`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(min_length=1, max_length=200)
    globally_enabled: bool = True
    enabled_for_tenants: frozenset[str] = frozenset()
    rollout_percentage: int = Field(default=0, ge=0, le=100)
    default_value: bool = False
    description: str | None = None

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not _KEY.match(value):
            raise ValueError("a flag key is 1-200 characters without whitespace, control characters or '/'")
        return value

    @field_validator("enabled_for_tenants", mode="before")
    @classmethod
    def _tenant_strings(cls, value: Any) -> Any:
        # UUIDs are welcome; they are compared as their canonical text, as the context carries them.
        if isinstance(value, Iterable) and not isinstance(value, str | bytes):
            return frozenset(str(v) for v in value)
        return value

    def to_feature(self) -> Feature:
        """The general model of this flag. The allow-list strategy is always there, even empty, because an
        Unleash feature with no strategies at all is on for everyone."""
        strategies = [
            Strategy(
                name="default",
                constraints=(
                    Constraint(
                        context_name=TENANT_PROPERTY,
                        operator="IN",
                        values=tuple(sorted(self.enabled_for_tenants)),
                    ),
                ),
            )
        ]
        if self.rollout_percentage > 0:
            strategies.append(
                Strategy(
                    name="flexibleRollout",
                    parameters={
                        "rollout": str(self.rollout_percentage),
                        "stickiness": TENANT_PROPERTY,
                        "groupId": self.key,
                    },
                )
            )
        elif self.default_value:
            strategies.append(Strategy(name="default"))
        return Feature(
            name=self.key,
            enabled=self.globally_enabled,
            description=self.description,
            type="llmproxy-simple",
            strategies=tuple(strategies),
        )

    @classmethod
    def from_feature(cls, feature: Feature) -> Flag | None:
        """The simple flag a feature was made from, or ``None`` when it is not of that shape."""
        if feature.type != "llmproxy-simple" or feature.variants or feature.dependencies:
            return None
        strategies = feature.strategies
        if not strategies or len(strategies) > 2:
            return None
        allow = strategies[0]
        if allow.name != "default" or len(allow.constraints) != 1 or allow.segments or allow.variants:
            return None
        constraint = allow.constraints[0]
        if constraint.context_name != TENANT_PROPERTY or constraint.operator != "IN" or constraint.inverted:
            return None
        rollout, default = 0, False
        if len(strategies) == 2:
            second = strategies[1]
            if second.constraints or second.segments or second.variants:
                return None
            if second.name == "default":
                default = True
            elif (
                second.name == "flexibleRollout"
                and second.parameters.get("stickiness") == TENANT_PROPERTY
                and second.parameters.get("groupId") == feature.name
                and second.parameters.get("rollout", "").isdigit()
                and 0 < int(second.parameters["rollout"]) <= 100
            ):
                rollout = int(second.parameters["rollout"])
            else:
                return None
        return cls(
            key=feature.name,
            globally_enabled=feature.enabled,
            enabled_for_tenants=frozenset(constraint.values),
            rollout_percentage=rollout,
            default_value=default,
            description=feature.description,
        )


def as_feature(flag: Feature | Flag) -> Feature:
    return flag.to_feature() if isinstance(flag, Flag) else flag
