"""The base of every package's options object: one frozen, validated declaration of a package's settings.

A package declares its options once, as a subclass with typed, constrained fields and their defaults; its sync
and async clients take one instance (or keyword overrides of the defaults) instead of repeating the same long
parameter list in every constructor:

    class CacheOptions(Options):
        l1_ttl: float = Field(5.0, ge=0)
        redis_ttl: int = Field(60, ge=1)

    class Service:
        def __init__(self, redis, *, options: CacheOptions | None = None, **overrides: Any) -> None:
            self.options = CacheOptions.build(options, overrides)

A bad value raises pydantic's ``ValidationError`` naming the field; an unknown name is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict


class Options(BaseModel):
    """Frozen, validated options; unknown names are refused."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", arbitrary_types_allowed=True, validate_default=True
    )

    @classmethod
    def build(cls, options: Self | None = None, overrides: Mapping[str, Any] | None = None) -> Self:
        """``options`` (or the defaults) with ``overrides`` applied, validated together."""
        if options is not None and not isinstance(options, cls):
            raise TypeError(f"options must be a {cls.__name__}, got {type(options).__name__}")
        if not overrides:
            return options if options is not None else cls()
        base = dict(options) if options is not None else {}
        return cls(**{**base, **overrides})

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, validated like a new instance."""
        return type(self)(**{**dict(self), **changes})
