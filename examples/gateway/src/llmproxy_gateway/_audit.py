"""The gateway's audit trail: one publisher, an optional embedded consumer, and the helper admin routes call.

Events travel over the gateway's own Redis (Redis Streams, through the write-behind shared per Redis client,
so an audit event leaves in the same pipeline as the other concerns' writes) or over RabbitMQ
(``LLMPROXY_AUDIT_TRANSPORT_URL=amqp://…``). The consumer that stores them runs

- embedded, in a thread of the gateway process (the default with ``memory://`` Redis, which other processes
  cannot reach), or
- as its own process, ``llmproxy-audit consume`` (the default with a real Redis or RabbitMQ: scale it apart
  from the gateways). ``LLMPROXY_AUDIT_CONSUMER=embedded|external`` chooses explicitly.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from llmproxy.audit import (
    AsyncAuditPublisher,
    AsyncAuditStore,
    AuditConsumer,
    AuditOptions,
    consumer_from_url,
)
from llmproxy.core import context_from_scope, is_memory_url

from ._backends import Backends
from ._settings import GatewaySettings

logger = logging.getLogger("llmproxy_gateway.audit")


@dataclass
class GatewayAudit:
    publisher: AsyncAuditPublisher
    store: AsyncAuditStore
    consumer: AuditConsumer | None = None
    #: Where events travel (the gateway's Redis, or ``amqp://…``).
    transport_url: str = ""

    @classmethod
    def from_settings(cls, settings: GatewaySettings, backends: Backends) -> GatewayAudit:
        audit = settings.audit
        options: AuditOptions = audit.options()
        url = audit.transport_url
        if url == settings.redis_url:
            publisher = AsyncAuditPublisher.on_redis(backends.redis, options)
        else:
            publisher = AsyncAuditPublisher.from_url(url, options)
        embedded = audit.audit_consumer == "embedded" or (
            audit.audit_consumer == "auto" and url == settings.redis_url and is_memory_url(url)
        )
        consumer = consumer_from_url(url, settings.database_url, options) if embedded else None
        backends.budget_alerts.bind_audit(publisher)  # quota's budget alerts go to the trail too
        return cls(publisher, AsyncAuditStore(backends.engine), consumer, url)

    async def start(self) -> None:
        if self.consumer is not None:
            # Creates this month's partitions (PostgreSQL) before the first event needs them.
            await asyncio.to_thread(self.consumer.maintain)
            self.consumer.start()

    async def aclose(self) -> None:
        try:
            await asyncio.wait_for(self.publisher.flush(), 5.0)
        except TimeoutError:
            logger.warning("audit events still queued at shutdown were dropped")
        await self.publisher.aclose()
        if self.consumer is not None:
            await asyncio.to_thread(self.consumer.drain, wait=0.05)  # what the last requests published
            await asyncio.to_thread(self.consumer.stop)
            self.consumer.engine.dispose()


def audit_admin_change(
    request: Request,
    action: str,
    entity_type: str,
    entity_id: Any,
    old: Any = None,
    new: Any = None,
    *,
    tenant_id: uuid.UUID | None = None,
    outcome: str = "success",
) -> bool:
    """Publish an admin mutation: who (from the request's context), what, and its values before and after.

    ``old`` / ``new`` may be pydantic models or dicts (redacted before they leave the process: a secret field
    never reaches the trail). ``tenant_id`` is the tenant acted on (default: the caller's). Never raises,
    never waits; False when the event was dropped (counted in the publisher's ``stats``).
    """
    audit: GatewayAudit | None = getattr(request.app.state, "audit", None)
    if audit is None:
        return False
    ctx = context_from_scope(request.scope)
    extra: dict[str, Any] = {"outcome": outcome}
    if tenant_id is not None:
        extra["tenant_id"] = tenant_id
    return audit.publisher.publish(
        action,
        entity_type,
        None if entity_id is None else str(entity_id),
        _values(old),
        _values(new),
        context=ctx,
        **extra,
    )


def _values(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if hasattr(value, "model_dump"):
        dumped: dict[str, Any] = value.model_dump(mode="json")
        return dumped
    if isinstance(value, dict):
        return value
    return {"value": value}
