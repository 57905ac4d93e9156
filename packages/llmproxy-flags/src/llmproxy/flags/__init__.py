"""Feature flags: Unleash's model and bucketing evaluated in-process over an immutable snapshot."""

from ._asgi import FlagGate, FlagsMiddleware, FlagsWSGIMiddleware
from ._client import AsyncFlagsClient, FlagsClient
from ._context import FlagContext, request_values, unleash_values
from ._distribution import FlagsOptions, FlagsStats, FlagsStatus, keys
from ._errors import FeatureDisabled
from ._evaluator import Evaluator
from ._fastapi import add_exception_handlers, require_flag
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
from ._repository import (
    AsyncFlagRepository,
    FlagNotFound,
    FlagRepository,
    InvalidFlagSet,
    StoredFlag,
    StoredSegment,
    StoredSet,
    VersionConflict,
)
from ._rules import bucket
from ._snapshot import DISABLED, Evaluation, Snapshot, VariantResult
from ._tables import flag_sets_table, flags_table, segments_table
from ._version import __version__

__all__ = [
    "DISABLED",
    "OPERATORS",
    "STRATEGIES",
    "AsyncFlagRepository",
    "AsyncFlagsClient",
    "Constraint",
    "Dependency",
    "Evaluation",
    "Evaluator",
    "Feature",
    "FeatureDisabled",
    "FeatureSet",
    "Flag",
    "FlagContext",
    "FlagGate",
    "FlagNotFound",
    "FlagRepository",
    "FlagsClient",
    "FlagsMiddleware",
    "FlagsOptions",
    "FlagsStats",
    "FlagsStatus",
    "FlagsWSGIMiddleware",
    "InvalidFlagSet",
    "Override",
    "Payload",
    "Segment",
    "Snapshot",
    "StoredFlag",
    "StoredSegment",
    "StoredSet",
    "Strategy",
    "Variant",
    "VariantResult",
    "VersionConflict",
    "__version__",
    "add_exception_handlers",
    "bucket",
    "flag_sets_table",
    "flags_table",
    "keys",
    "request_values",
    "require_flag",
    "segments_table",
    "unleash_values",
]
