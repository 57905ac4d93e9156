"""Evaluation contexts: ``FlagContext`` (worker loops, explicit use), a request's ``RequestContext``, or an
Unleash-style mapping, each turned into the flat ``{name: text}`` the compiled rules read."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from llmproxy.core import RequestContext

#: Unleash's own context fields; everything else is a custom property.
UNLEASH_FIELDS: Final = ("userId", "sessionId", "remoteAddress", "environment", "appName", "currentTime")


def text(value: object) -> str:
    """A context value as Unleash compares it: text (booleans as ``true``/``false``, times in ISO 8601)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def unleash_values(context: Mapping[str, Any]) -> dict[str, str]:
    """Flatten an Unleash context (``{"userId": ..., "properties": {...}}``): properties, then the top-level
    fields over them (a field of the context wins over a property of the same name). ``None`` is absent."""
    values: dict[str, str] = {}
    properties = context.get("properties")
    if isinstance(properties, Mapping):
        for key, value in properties.items():
            if value is not None:
                values[str(key)] = text(value)
    for key, value in context.items():
        if key != "properties" and value is not None:
            values[key] = text(value)
    return values


def request_values(ctx: RequestContext) -> dict[str, str]:
    """The values of a request: ``userId``, ``remoteAddress`` and the properties ``tenant_id``,
    ``api_key_id``, ``endpoint`` and ``model`` (only those the request has)."""
    values: dict[str, str] = {}
    if ctx.tenant_id is not None:
        values["tenant_id"] = str(ctx.tenant_id)
    if ctx.user_id is not None:
        values["userId"] = ctx.user_id
    if ctx.api_key_id is not None:
        values["api_key_id"] = str(ctx.api_key_id)
    if ctx.client_ip is not None:
        values["remoteAddress"] = ctx.client_ip
    if ctx.endpoint is not None:
        values["endpoint"] = ctx.endpoint
    if ctx.model is not None:
        values["model"] = ctx.model
    return values


@dataclass(frozen=True, slots=True)
class FlagContext:
    """Who a flag is evaluated for, outside a request (worker loops) or with more than a request knows.

    ``tenant_id`` becomes the ``tenant_id`` property (the seed's flags roll out on it); ``properties`` are
    any custom properties. Build one per unit of work and reuse it: its values are computed once.
    """

    tenant_id: str | uuid.UUID | None = None
    user_id: str | None = None
    session_id: str | None = None
    remote_address: str | None = None
    environment: str | None = None
    app_name: str | None = None
    current_time: datetime | str | None = None
    properties: Mapping[str, object] = field(default_factory=dict)
    values: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        values = {str(k): text(v) for k, v in self.properties.items() if v is not None}
        if self.tenant_id is not None:
            values["tenant_id"] = str(self.tenant_id)
        for name, value in (
            ("userId", self.user_id),
            ("sessionId", self.session_id),
            ("remoteAddress", self.remote_address),
            ("environment", self.environment),
            ("appName", self.app_name),
            ("currentTime", self.current_time),
        ):
            if value is not None:
                values[name] = text(value)
        object.__setattr__(self, "values", values)

    @classmethod
    def from_request(cls, ctx: RequestContext, **properties: object) -> FlagContext:
        """The request's identity (tenant, user, client address) plus its other details as properties."""
        base: dict[str, object] = {
            k: v
            for k, v in (("api_key_id", ctx.api_key_id), ("endpoint", ctx.endpoint), ("model", ctx.model))
            if v is not None
        }
        return cls(
            tenant_id=ctx.tenant_id,
            user_id=ctx.user_id,
            remote_address=ctx.client_ip,
            properties={**base, **properties},
        )

    @classmethod
    def from_unleash(cls, context: Mapping[str, Any]) -> FlagContext:
        """From an Unleash SDK context mapping (``userId``, ..., ``properties``)."""
        known = {
            "userId": "user_id",
            "sessionId": "session_id",
            "remoteAddress": "remote_address",
            "environment": "environment",
            "appName": "app_name",
            "currentTime": "current_time",
        }
        kwargs: dict[str, Any] = {attr: context.get(key) for key, attr in known.items()}
        properties = dict(context.get("properties") or {})
        properties.update({k: v for k, v in context.items() if k not in known and k != "properties"})
        return cls(**kwargs, properties=properties)

    def with_properties(self, **properties: object) -> FlagContext:
        return FlagContext(
            tenant_id=self.tenant_id,
            user_id=self.user_id,
            session_id=self.session_id,
            remote_address=self.remote_address,
            environment=self.environment,
            app_name=self.app_name,
            current_time=self.current_time,
            properties={**self.properties, **properties},
        )
