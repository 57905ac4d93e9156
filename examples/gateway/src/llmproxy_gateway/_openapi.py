"""The OpenAPI document says what the gateway really answers: its OpenAI-style errors, per route, and auth.

FastAPI lists 422 for every route with parameters; the gateway answers a validation error with 400 (OpenAI's
status), so 422 and its schemas are taken out, and each route names the error statuses it can answer with
:func:`errors`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    message: str = Field(description="What went wrong, for a person to read.")
    type: str = Field(description="OpenAI's error type, e.g. invalid_request_error, rate_limit_error.")
    code: str | None = Field(description="A stable code for programs, e.g. invalid_value, tenant_not_found.")
    param: str | None = Field(description="The field at fault (dotted path), when there is one.")


class ErrorResponse(BaseModel):
    """Every error the gateway answers: ``{"error": {"message", "type", "code", "param"}}``."""

    error: ErrorDetail


_RETRY_AFTER = {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
_RATE_LIMIT_HEADERS = {
    f"x-ratelimit-{kind}-{unit}": {"description": description, "schema": {"type": schema}}
    for unit in ("requests", "tokens")
    for kind, description, schema in (
        ("limit", f"The {unit} limit that applies.", "integer"),
        ("remaining", f"{unit.capitalize()} left in the window.", "integer"),
        ("reset", "When the window resets (e.g. 1s, 6m0s).", "string"),
    )
}

_BUDGET_HEADERS = {
    "x-budget-limit": {
        "description": "Under a spend budget: the most binding budget's limit (micro-units of USD).",
        "schema": {"type": "integer"},
    },
    "x-budget-remaining": {
        "description": "What is left of it in the current period (micro-units).",
        "schema": {"type": "integer"},
    },
    "x-budget-reset": {"description": "When its period resets (e.g. 6h2m0s).", "schema": {"type": "string"}},
    "x-budget-warning": {
        "description": "Present once the budget is past its soft threshold.",
        "schema": {"type": "string"},
    },
}

_ERRORS: dict[int, tuple[str, dict[str, Any]]] = {
    400: ("Invalid request: bad JSON or a bad field (named in `param`), a body nested too deeply.", {}),
    401: (
        "No credentials, or an unknown, revoked or expired API key or token.",
        {"WWW-Authenticate": {"description": "Bearer challenge.", "schema": {"type": "string"}}},
    ),
    403: (
        "The credentials do not allow this (a policy, a scope, another tenant, a model the API key may not "
        "use: `model_not_allowed`, a model without a price under a spend budget: `model_not_priced`).",
        {},
    ),
    404: ("Not found: the tenant, the API key, the model, the flag, the price override or the budget.", {}),
    409: (
        "A conflict: a tenant with this name exists, or a flag's `expected_version` is not the stored one.",
        {},
    ),
    413: ("The request body is larger than LLMPROXY_MAX_BODY_BYTES.", {}),
    429: (
        "Over a rate limit (`rate_limit_exceeded`) or a daily/monthly quota or spend budget "
        "(`insufficient_quota`, Retry-After at the period's reset); no Retry-After when the request alone "
        "costs more than the limit.",
        {"Retry-After": _RETRY_AFTER, **_RATE_LIMIT_HEADERS, **_BUDGET_HEADERS},
    ),
    502: ("The upstream provider failed or refused the gateway's own credentials.", {}),
    503: (
        "A backend (database, Redis for auth or quotas) is unreachable; retry later.",
        {"Retry-After": _RETRY_AFTER},
    ),
    504: ("The upstream provider did not answer in time.", {}),
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=``: each error status with its description, headers and the error schema."""
    return {
        status: {"model": ErrorResponse, "description": _ERRORS[status][0], "headers": _ERRORS[status][1]}
        for status in statuses
    }


#: The security scheme every non-public operation uses.
BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": "An API key (`sk-llmp-...`), a tenant admin's JWT, or the platform-admin token.",
}


def document_errors_and_auth(app: FastAPI) -> None:
    """Make ``app.openapi()`` drop FastAPI's 422 and declare bearer auth on every operation."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
                    operation["security"] = [{"bearer": []}]
            components = schema.setdefault("components", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                components.get("schemas", {}).pop(unused, None)
            components["securitySchemes"] = {"bearer": BEARER}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
