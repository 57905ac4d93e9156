"""The evaluation half of both clients: the current snapshot, contexts turned into values, answers.

Nothing here does I/O or takes a lock. The snapshot is replaced by assigning one attribute, so every call
reads one consistent snapshot.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeAlias, TypeVar

from llmproxy.core import RequestContext, current_context

from ._context import FlagContext, request_values, unleash_values
from ._errors import FeatureDisabled
from ._snapshot import Evaluation, Snapshot, VariantResult

logger = logging.getLogger("llmproxy.flags")

ChangeListener: TypeAlias = Callable[[Snapshot, Snapshot, list[str]], None]
Context: TypeAlias = FlagContext | RequestContext | Mapping[str, Any] | None
T = TypeVar("T")
P = ParamSpec("P")

# The context of a unit of work outside a request (``Evaluator.use``): asked before the request's context.
_flag_context: contextvars.ContextVar[FlagContext | RequestContext | None] = contextvars.ContextVar(
    "llmproxy_flag_context", default=None
)

_EMPTY: Mapping[str, str] = {}


class Evaluator:
    """Answers flag questions from the snapshot it holds (see ``FlagsClient`` for one that keeps it current).

    ``ctx`` may be a :class:`FlagContext`, a request's ``RequestContext``, an Unleash-style mapping, or
    ``None`` for the current request's context (none outside a request). ``static_context`` (e.g.
    ``{"environment": "prod", "appName": "gateway"}``) is added under every context.
    """

    def __init__(self, snapshot: Snapshot, *, static_context: Mapping[str, str] | None = None) -> None:
        self._snapshot = snapshot
        self._static: dict[str, str] = dict(static_context or {})
        # The values of the last RequestContext seen: a request asks several flags with the same context.
        self._last: tuple[RequestContext | None, Mapping[str, str]] = (None, _EMPTY)
        self._listeners: list[ChangeListener] = []
        # Set by a client whose background loader has not started yet (or must start again after a fork):
        # the first evaluation starts it. One attribute test on the hot path.
        self._kick: Callable[[], None] | None = None

    # -- the snapshot

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def snapshot_version(self) -> str:
        """The version of the flag set being served (``""`` for code defaults)."""
        return self._snapshot.version

    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener(old, new, changed_flag_names)`` after every snapshot change that changes a flag."""
        self._listeners.append(listener)

    def remove_listener(self, listener: ChangeListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _swap(self, snapshot: Snapshot) -> list[str]:
        """Serve ``snapshot`` from now on; tell the listeners which flags changed (the comparison is made
        only when someone listens)."""
        previous, self._snapshot = self._snapshot, snapshot
        if not self._listeners:
            return []
        changed = previous.changed(snapshot)
        if changed:
            for listener in list(self._listeners):
                try:
                    listener(previous, snapshot, changed)
                except Exception:
                    logger.exception("flag change listener failed")
        return changed

    # -- contexts

    def values(self, ctx: Context = None) -> Mapping[str, str]:
        """The flat values the rules read for ``ctx``."""
        if ctx is None:
            ctx = _flag_context.get() or current_context()
            if ctx is None:
                return self._static
        # Concrete classes first: isinstance against them is cheap, against Mapping (an ABC) it is not.
        if isinstance(ctx, FlagContext):
            values = ctx.values
        elif isinstance(ctx, RequestContext):
            last, cached = self._last
            if last is ctx:
                return cached
            values = request_values(ctx)
            if self._static:
                values = {**self._static, **values}
            self._last = (ctx, values)
            return values
        elif isinstance(ctx, Mapping):
            values = unleash_values(ctx)
        else:
            raise TypeError(f"not a flag context: {type(ctx).__name__}")
        return {**self._static, **values} if self._static else values

    # -- answers

    def is_enabled(self, key: str, ctx: Context = None, default: bool = False) -> bool:
        """Is flag ``key`` on for ``ctx``? ``default`` when the flag set has no such flag."""
        if self._kick is not None:
            self._kick()
        feature = self._snapshot.features.get(key)
        if feature is None:
            return default
        return feature.check(self.values(ctx))

    def variant(self, key: str, ctx: Context = None) -> VariantResult:
        """The flag's variant for ``ctx`` (``name == "disabled"`` when off or without variants)."""
        if self._kick is not None:
            self._kick()
        return self._snapshot.variant(key, self.values(ctx))

    def explain(self, key: str, ctx: Context = None) -> Evaluation | None:
        """Value, variant and reason (``None``: no such flag)."""
        if self._kick is not None:
            self._kick()
        return self._snapshot.explain(key, self.values(ctx))

    def evaluate(self, keys: Iterable[str], ctx: Context = None) -> dict[str, bool]:
        """Several flags for one context (unknown ones are ``False``)."""
        if self._kick is not None:
            self._kick()
        values = self.values(ctx)
        features = self._snapshot.features
        out: dict[str, bool] = {}
        for key in keys:
            feature = features.get(key)
            out[key] = feature is not None and feature.check(values)
        return out

    def when_enabled(
        self,
        key: str,
        ctx: Context,
        if_enabled: Callable[[], T],
        if_disabled: Callable[[], T],
        *,
        default: bool = False,
    ) -> T:
        """Call ``if_enabled`` or ``if_disabled`` by the flag (the seed's ``WhenEnabled``)."""
        return if_enabled() if self.is_enabled(key, ctx, default) else if_disabled()

    async def when_enabled_async(
        self,
        key: str,
        ctx: Context,
        if_enabled: Callable[[], Awaitable[T] | T],
        if_disabled: Callable[[], Awaitable[T] | T],
        *,
        default: bool = False,
    ) -> T:
        """Await ``if_enabled`` or ``if_disabled`` by the flag (the seed's ``WhenEnabledAsync``); plain
        callables are called."""
        chosen = if_enabled if self.is_enabled(key, ctx, default) else if_disabled
        result = chosen()
        if isinstance(result, Awaitable):
            return await result
        return result

    # -- worker loops and decorators

    @contextmanager
    def use(self, ctx: FlagContext | RequestContext) -> Iterator[FlagContext | RequestContext]:
        """Evaluate with ``ctx`` whenever no context is given, for the body of the ``with`` (worker loops)."""
        token = _flag_context.set(ctx)
        try:
            yield ctx
        finally:
            _flag_context.reset(token)

    @contextmanager
    def guard(self, key: str, ctx: Context = None, *, default: bool = False) -> Iterator[None]:
        """``with flags.guard("x", ctx):`` runs the body when the flag is on, else raises FeatureDisabled."""
        if not self.is_enabled(key, ctx, default):
            raise FeatureDisabled(key)
        yield

    def requires(self, key: str, *, default: bool = False) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """Decorate a function (sync or async) to raise ``FeatureDisabled`` unless ``key`` is on for the
        current context (``use()``'s, else the current request's)."""

        def decorate(fn: Callable[P, T]) -> Callable[P, T]:
            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def guarded_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                    if not self.is_enabled(key, None, default):
                        raise FeatureDisabled(key)
                    return await fn(*args, **kwargs)

                return guarded_async  # type: ignore[return-value]

            @functools.wraps(fn)
            def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
                if not self.is_enabled(key, None, default):
                    raise FeatureDisabled(key)
                return fn(*args, **kwargs)

            return guarded

        return decorate
