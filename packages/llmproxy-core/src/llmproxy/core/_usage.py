"""The usage channel: handlers report token usage; middlewares read it when the response ends."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from ._types import Scope, WSGIEnviron

SCOPE_KEY = "llmproxy.usage"
ENVIRON_KEY = "llmproxy.usage"

_current: contextvars.ContextVar[Usage | None] = contextvars.ContextVar("llmproxy_usage", default=None)


@dataclass(slots=True)
class Usage:
    """Token usage of one request, as far as it is known.

    ``final`` is False while a stream is still producing output (the numbers are "so far"), and becomes
    True once the handler reports the provider's final figures.
    """

    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    final: bool = False
    reported: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def update(
        self,
        *,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        final: bool = True,
    ) -> None:
        # A stream reports after every chunk: checked inline, nothing built. Both checks come before any
        # field changes, so a bad figure leaves the usage as it was.
        if input_tokens is not None and (type(input_tokens) is not int or input_tokens < 0):
            _check_tokens("input_tokens", input_tokens)
        if output_tokens is not None and (type(output_tokens) is not int or output_tokens < 0):
            _check_tokens("output_tokens", output_tokens)
        if model is not None:
            self.model = model
        if input_tokens is not None:
            self.input_tokens = input_tokens
        if output_tokens is not None:
            self.output_tokens = output_tokens
        self.final = final
        self.reported = True


def _check_tokens(name: str, value: object) -> None:
    """Raises unless ``value`` is a non-negative ``int`` (a subclass other than ``bool`` is one too)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def current_usage() -> Usage | None:
    return _current.get()


def report_usage(
    *,
    model: str | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    final: bool = True,
) -> Usage | None:
    """Report the current request's usage (absolute figures, not increments).

    While streaming, call with ``final=False`` and the tokens streamed so far; when the provider's final
    usage is known call with ``final=True``. Returns the request's :class:`Usage`, or None when no
    llmproxy middleware opened a usage channel (reporting is then a no-op, never an error).
    """
    usage = _current.get()
    if usage is not None:
        usage.update(model=model, input_tokens=input_tokens, output_tokens=output_tokens, final=final)
    return usage


def _scope_usage(holder: Scope | WSGIEnviron, key: str) -> Usage:
    usage = holder.get(key)
    if not isinstance(usage, Usage):
        usage = holder[key] = Usage()
    return usage


def bind_usage(scope: Scope) -> tuple[Usage, contextvars.Token[Usage | None]]:
    """The scope's usage channel (created if no outer middleware opened one), made current for the handler.

    Reset the token with :func:`reset_usage` when the request ends (for a stream: after its last chunk)."""
    usage = _scope_usage(scope, SCOPE_KEY)
    return usage, _current.set(usage)


def bind_environ_usage(environ: WSGIEnviron) -> tuple[Usage, contextvars.Token[Usage | None]]:
    """The WSGI twin of :func:`bind_usage`; reset the token when the server closes the body."""
    usage = _scope_usage(environ, ENVIRON_KEY)
    return usage, _current.set(usage)


def open_usage(scope: Scope) -> Usage:
    """The scope's usage channel, created (and made current) if no outer middleware opened one.

    It stays current until something else is made current: middlewares use :func:`bind_usage`, whose token
    puts the previous value back when the request ends."""
    usage = _scope_usage(scope, SCOPE_KEY)
    _current.set(usage)
    return usage


def open_environ_usage(environ: WSGIEnviron) -> Usage:
    """The WSGI twin of :func:`open_usage` (middlewares use :func:`bind_environ_usage`)."""
    usage = _scope_usage(environ, ENVIRON_KEY)
    _current.set(usage)
    return usage


def use_usage(usage: Usage | None) -> contextvars.Token[Usage | None]:
    """Make ``usage`` the current channel (worker loops); reset with the returned token."""
    return _current.set(usage)


def reset_usage(token: contextvars.Token[Usage | None]) -> None:
    try:
        _current.reset(token)
    except ValueError:  # a token of another context: never keep a finished request's channel
        _current.set(None)
