"""Feature flags: Unleash's model and bucketing evaluated in-process over an immutable snapshot."""

from ._context import FlagContext, request_values, unleash_values
from ._evaluator import Evaluator
from ._models import (
    OPERATORS,
    STRATEGIES,
    Constraint,
    Dependency,
    Feature,
    FeatureSet,
    Flag,
    Override,
    Payload,
    Segment,
    Strategy,
    Variant,
)
from ._rules import bucket
from ._snapshot import DISABLED, Evaluation, Snapshot, VariantResult
from ._version import __version__

__all__ = [
    "DISABLED",
    "OPERATORS",
    "STRATEGIES",
    "Constraint",
    "Dependency",
    "Evaluation",
    "Evaluator",
    "Feature",
    "FeatureSet",
    "Flag",
    "FlagContext",
    "Override",
    "Payload",
    "Segment",
    "Snapshot",
    "Strategy",
    "Variant",
    "VariantResult",
    "__version__",
    "bucket",
    "request_values",
    "unleash_values",
]
