"""An OpenFeature provider (``openfeature-sdk``) over a flags client's snapshot.

Booleans are the flag's on/off; strings, integers, floats and objects come from the variant's payload
(``string``/``csv`` -> str, ``number`` -> int or float, ``json`` -> object). ``targeting_key`` becomes
``userId``; the other attributes become properties (Unleash's own field names keep their meaning). The
current request's context, if any, is underneath.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata

from ._context import text
from ._evaluator import Evaluator
from ._models import Payload
from ._snapshot import Snapshot

T = TypeVar("T")

_NOT_FOUND = "flag not found"


class _Mismatch(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _string(payload: Payload) -> str:
    if payload.type in ("string", "csv"):
        return payload.value
    raise _Mismatch(ErrorCode.TYPE_MISMATCH, f"the variant's payload is {payload.type}, not a string")


def _number(payload: Payload) -> float:
    if payload.type != "number":
        raise _Mismatch(ErrorCode.TYPE_MISMATCH, f"the variant's payload is {payload.type}, not a number")
    try:
        return float(payload.value)
    except ValueError:
        raise _Mismatch(ErrorCode.PARSE_ERROR, f"the payload {payload.value!r} is not a number") from None


def _integer(payload: Payload) -> int:
    number = _number(payload)
    if not number.is_integer():
        raise _Mismatch(ErrorCode.TYPE_MISMATCH, f"the payload {payload.value!r} is not an integer")
    return int(number)


def _object(payload: Payload) -> Any:
    if payload.type != "json":
        raise _Mismatch(ErrorCode.TYPE_MISMATCH, f"the variant's payload is {payload.type}, not JSON")
    try:
        value = json.loads(payload.value)
    except ValueError as exc:
        raise _Mismatch(ErrorCode.PARSE_ERROR, f"the payload is not JSON: {exc}") from None
    if not isinstance(value, dict | list):
        raise _Mismatch(ErrorCode.TYPE_MISMATCH, "the JSON payload is not an object or a list")
    return value


class FlagsProvider(AbstractProvider):
    """Serve OpenFeature evaluations from ``client`` (a ``FlagsClient``, ``AsyncFlagsClient`` or any
    ``Evaluator``). Emits ``PROVIDER_CONFIGURATION_CHANGED`` with ``flags_changed`` on every snapshot
    change that changes a flag."""

    def __init__(self, client: Evaluator, *, name: str = "llmproxy-flags") -> None:
        super().__init__()
        self._client = client
        self._metadata = Metadata(name=name)
        client.add_listener(self._changed)

    def get_metadata(self) -> Metadata:
        return self._metadata

    def shutdown(self) -> None:
        self._client.remove_listener(self._changed)

    def _changed(self, _old: Snapshot, new: Snapshot, names: list[str]) -> None:
        self.emit_provider_configuration_changed(
            ProviderEventDetails(flags_changed=names, metadata={"snapshot_version": new.version})
        )

    def _values(self, ctx: EvaluationContext | None) -> Mapping[str, str]:
        base = self._client.values(None)
        if ctx is None or (ctx.targeting_key is None and not ctx.attributes):
            return base
        values = dict(base)
        for key, value in ctx.attributes.items():
            if type(value) is str:  # the common case first: ABC isinstance checks cost ~1 us a context
                values[key] = value
            elif isinstance(value, bool | int | float | datetime):
                values[key] = text(value)
            # None is absent; lists and mappings mean nothing to Unleash's flat-text rules
        if ctx.targeting_key is not None:
            values["userId"] = ctx.targeting_key
        return values

    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[bool]:
        evaluation = self._client.snapshot.explain(flag_key, self._values(evaluation_context))
        if evaluation is None:
            return FlagResolutionDetails(
                default_value,
                error_code=ErrorCode.FLAG_NOT_FOUND,
                error_message=_NOT_FOUND,
                reason=Reason.ERROR,
            )
        variant = evaluation.variant.name if evaluation.variant.enabled else None
        return FlagResolutionDetails(evaluation.enabled, reason=Reason(evaluation.reason), variant=variant)

    def _from_payload(
        self, flag_key: str, default: T, ctx: EvaluationContext | None, convert: Callable[[Payload], Any]
    ) -> FlagResolutionDetails[T]:
        evaluation = self._client.snapshot.explain(flag_key, self._values(ctx))
        if evaluation is None:
            return FlagResolutionDetails(
                default, error_code=ErrorCode.FLAG_NOT_FOUND, error_message=_NOT_FOUND, reason=Reason.ERROR
            )
        variant = evaluation.variant
        if not evaluation.enabled:
            return FlagResolutionDetails(default, reason=Reason(evaluation.reason))
        if not variant.enabled or variant.payload is None:
            return FlagResolutionDetails(
                default, reason=Reason.DEFAULT, variant=variant.name if variant.enabled else None
            )
        try:
            value = convert(variant.payload)
        except _Mismatch as exc:
            return FlagResolutionDetails(
                default,
                error_code=exc.code,
                error_message=str(exc),
                reason=Reason.ERROR,
                variant=variant.name,
            )
        return FlagResolutionDetails(value, reason=Reason(evaluation.variant_reason), variant=variant.name)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._from_payload(flag_key, default_value, evaluation_context, _string)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._from_payload(flag_key, default_value, evaluation_context, _integer)

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        return self._from_payload(flag_key, default_value, evaluation_context, _number)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._from_payload(flag_key, default_value, evaluation_context, _object)
