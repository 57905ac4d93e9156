"""FastAPI / Starlette glue: a dependency that requires a flag, and the handler that answers
``FeatureDisabled`` as OpenAI-style JSON."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from llmproxy.core import RequestContext, context_from_scope

from ._errors import FeatureDisabled
from ._evaluator import Evaluator


def require_flag(flags: Evaluator, key: str, *, default: bool = False) -> Callable[[Any], Awaitable[None]]:
    """``Depends(require_flag(flags, "x"))``: the route answers 403 ``feature_disabled`` unless flag ``key``
    is on for the request's context (install :func:`add_exception_handlers` on the app)."""
    from starlette.requests import Request

    async def dependency(request: Request) -> None:
        ctx = context_from_scope(request.scope) or RequestContext.from_scope(request.scope)
        if not flags.is_enabled(key, ctx, default):
            raise FeatureDisabled(key)

    dependency.__name__ = f"require_flag_{key}"
    # Resolved here: FastAPI reads the annotation, and Request is imported only when this is used.
    dependency.__annotations__ = {"request": Request, "return": None}
    return dependency


def add_exception_handlers(app: Any) -> None:
    """Render ``FeatureDisabled`` raised by routes and dependencies as the OpenAI-style 403."""
    from starlette.requests import Request
    from starlette.responses import Response

    async def handler(_request: Request, exc: Exception) -> Response:
        error = exc if isinstance(exc, FeatureDisabled) else FeatureDisabled(str(exc))
        return Response(error.body(), status_code=error.status, media_type="application/json")

    app.add_exception_handler(FeatureDisabled, handler)
