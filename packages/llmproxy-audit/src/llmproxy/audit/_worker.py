"""``@audited`` and ``audit_block`` for worker loops: one event per call, with its outcome and duration."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from ._http import outcome_of
from ._publisher import AsyncAuditPublisher, AuditPublisher

F = TypeVar("F", bound=Callable[..., Any])
EntityId = Callable[..., Any] | str | None


def _outcome_metadata(started: float, error: BaseException | None) -> tuple[str, dict[str, Any]]:
    metadata: dict[str, Any] = {"duration_ms": round((time.perf_counter() - started) * 1000, 3)}
    if error is None:
        return "success", metadata
    metadata["error"] = type(error).__name__
    # A refusal that names its HTTP status (core's EdgeError: flags' FeatureDisabled; quota's QuotaExceeded)
    # is "denied", as the HTTP adapters record a 401/403/429; any other exception is a failure.
    status = getattr(error, "status", None)
    if isinstance(status, int) and not isinstance(status, bool):
        metadata["status"] = status
        return outcome_of(status), metadata
    return "failure", metadata


@contextmanager
def audit_block(
    publisher: AuditPublisher | AsyncAuditPublisher,
    action: str,
    *,
    entity_type: str,
    entity_id: str | None = None,
    **extra: Any,
) -> Iterator[None]:
    """``with audit_block(publisher, "job.run", entity_type="job"):`` — publishes when the block ends."""
    started = time.perf_counter()
    error: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        error = exc
        raise
    finally:
        outcome, metadata = _outcome_metadata(started, error)
        publisher.publish(action, entity_type, entity_id, outcome=outcome, metadata={**metadata, **extra})


def audited(
    action: str,
    *,
    entity_type: str,
    publisher: AuditPublisher | AsyncAuditPublisher | Callable[[], AuditPublisher | AsyncAuditPublisher],
    entity_id: EntityId = None,
) -> Callable[[F], F]:
    """Decorate a function (sync or async) so every call publishes ``action`` with its outcome.

    ``entity_id`` is a string, or a callable given the call's arguments. ``publisher`` may be a callable
    returning the publisher (resolved at call time, for publishers built after import).
    """

    def resolve() -> AuditPublisher | AsyncAuditPublisher:
        if isinstance(publisher, AuditPublisher | AsyncAuditPublisher):
            return publisher
        return publisher()

    def entity(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        if callable(entity_id):
            value = entity_id(*args, **kwargs)
            return None if value is None else str(value)
        return entity_id

    def decorate(func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                with audit_block(resolve(), action, entity_type=entity_type, entity_id=entity(args, kwargs)):
                    return await func(*args, **kwargs)

            return cast(F, awrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with audit_block(resolve(), action, entity_type=entity_type, entity_id=entity(args, kwargs)):
                return func(*args, **kwargs)

        return cast(F, wrapper)

    return decorate
