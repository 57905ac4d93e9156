"""Every error the FastAPI app raises, answered as OpenAI-style JSON. Nothing leaks a traceback."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from llmproxy.core import EdgeError

from ._failures import DATABASE_DOWN_ERRORS, DATABASE_UNAVAILABLE, INTERNAL_ERROR, database_unavailable

logger = logging.getLogger("llmproxy_gateway")

_STATUS_CODES = {
    400: "invalid_request",
    401: "invalid_api_key",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "rate_limit_exceeded",
}


def error_response(error: EdgeError) -> Response:
    """``error`` as a Starlette response (the body and headers :func:`llmproxy.core.send_error` sends)."""
    return Response(
        error.body(), status_code=error.status, media_type="application/json", headers=dict(error.headers)
    )


#: A part of a field's path longer than this (a dict key as sent: a 10 kB model name) is shortened.
_MAX_PART = 64


def _part(value: Any) -> str:
    text = str(value)
    return text if len(text) <= _MAX_PART else text[: _MAX_PART - 3] + "..."


def _location(loc: Sequence[Any]) -> str:
    parts = [_part(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts)


def describe_validation_error(errors: Sequence[Any]) -> tuple[str, str | None, str]:
    """A message naming the first bad field, the field (``param``) and a code."""
    if not errors:
        return "invalid request", None, "invalid_request"
    first = errors[0]
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return f"request body is not valid JSON: {detail}".rstrip(": "), None, "invalid_json"
    where = _location(first.get("loc", ()))
    if not where and first.get("type") == "missing":
        return "request body is missing (expected a JSON object)", None, "invalid_request"
    message = first.get("msg", "invalid value")
    more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
    if where:
        return f"invalid value for '{where}': {message}{more}", where, "invalid_value"
    return f"invalid request body: {message}{more}", None, "invalid_request"


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    message, param, code = describe_validation_error(exc.errors())
    return error_response(EdgeError(400, message, code=code, param=param))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"unknown path {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    kind = "server_error" if exc.status_code >= 500 else "invalid_request_error"
    code = _STATUS_CODES.get(exc.status_code)
    headers = {name.lower(): value for name, value in (exc.headers or {}).items()}
    if exc.status_code == 405:
        headers["allow"] = _allowed_methods(request) or headers.get("allow", "")
    return error_response(
        EdgeError(exc.status_code, message, type=kind, code=code, headers=tuple(headers.items()))
    )


def _allowed_methods(request: Request) -> str | None:
    """Every method the OpenAPI document lists for this path (Starlette's 405 names one route's only)."""
    path = request.url.path
    for template, operations in request.app.openapi().get("paths", {}).items():
        if re.fullmatch(_template_regex(template), path):
            return ", ".join(sorted(method.upper() for method in operations))
    return None


def _template_regex(template: str) -> str:
    return "/".join("[^/]+" if part.startswith("{") else re.escape(part) for part in template.split("/"))


async def _edge_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EdgeError)
    return error_response(exc)


async def _database_error(request: Request, exc: Exception) -> Response:
    logger.error("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return error_response(DATABASE_UNAVAILABLE)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    if database_unavailable(exc):  # a DBAPIError whose connection was invalidated
        return await _database_error(request, exc)
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(INTERNAL_ERROR)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(EdgeError, _edge_error)  # GatewayError and ProviderError among them
    for database_error in DATABASE_DOWN_ERRORS:
        app.add_exception_handler(database_error, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)
