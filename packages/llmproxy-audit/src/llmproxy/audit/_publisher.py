"""``AuditPublisher`` / ``AsyncAuditPublisher``: build, redact and enqueue an event; never raise, never wait.

Everything a publish does is in-process: read the current ``RequestContext``, redact, validate, serialize,
offer the bytes to the transport's sink (a bounded queue). A full queue, a transport that is down or an event
that does not validate is dropped and counted (``stats``) with a rate-limited log line — an audit hiccup must
never fail or slow the request it describes.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from llmproxy.core import RequestContext, current_context

from ._models import BOUNDED_BY_BODY, MAX_VALUES_BYTES, MAX_VALUES_DEPTH, AuditEvent
from ._options import AuditOptions
from ._redaction import DEFAULT_REDACTOR, Redactor
from ._transport import AsyncPublishSink, PublishSink, is_amqp_url

logger = logging.getLogger("llmproxy.audit")

PLATFORM_ADMIN_ROLE = "platform_admin"
_EVENT_FIELDS = frozenset(AuditEvent.model_fields)


@dataclass(slots=True)
class PublisherStats:
    """``published`` (handed to the transport), ``dropped`` (its queue full or it is down), ``invalid``."""

    published: int = 0
    dropped: int = 0
    invalid: int = 0

    def snapshot(self) -> dict[str, int]:
        return {"published": self.published, "dropped": self.dropped, "invalid": self.invalid}


class RateLimitedLog:
    """At most one warning per ``interval`` seconds per kind, saying how many were suppressed in between."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(kind, -1e18) < self.interval:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return
            self._last[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
        suffix = f" ({suppressed} more since the last such message)" if suppressed else ""
        logger.warning(message + suffix, *args)


def _tenant(value: Any) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(str(value))


def context_fields(ctx: RequestContext | None) -> dict[str, Any]:
    """The actor, tenant, ip, user agent and request id the context knows."""
    if ctx is None:
        return {"actor_type": "system"}
    if PLATFORM_ADMIN_ROLE in ctx.roles:
        actor = "platform_admin"
    elif ctx.api_key_id is not None:
        actor = "api_key"
    elif ctx.user_id is not None:
        actor = "user"
    else:
        actor = "system"
    return {
        "tenant_id": _tenant(ctx.tenant_id),
        "actor_type": actor,
        "user_id": ctx.user_id,
        "api_key_id": ctx.api_key_id,
        "request_id": ctx.request_id,
        "ip_address": ctx.client_ip,
        "user_agent": ctx.user_agent,
    }


class _PublisherBase:
    def __init__(self, *, redactor: Redactor = DEFAULT_REDACTOR, log_interval: float = 10.0) -> None:
        self.redactor = redactor
        self.stats = PublisherStats()
        self._log = RateLimitedLog(log_interval)

    def _sink_offer(self, body: bytes) -> bool:
        raise NotImplementedError

    def build(
        self,
        action: str,
        entity_type: str,
        entity_id: str | None = None,
        old_values: dict[str, Any] | None = None,
        new_values: dict[str, Any] | None = None,
        *,
        context: RequestContext | None = None,
        **extra: Any,
    ) -> AuditEvent:
        """The event ``publish`` would send (redacted, validated); raises ``ValidationError`` when invalid.

        ``extra`` may set any :class:`AuditEvent` field (``outcome``, ``actor_type``, ``tenant_id``, …,
        overriding the context's); other keys go into ``metadata``. ``context`` replaces the current
        ``RequestContext``.
        """
        fields = context_fields(context or current_context())
        metadata = extra.pop("metadata", None) or {}
        for key in list(extra):
            if key not in _EVENT_FIELDS:
                metadata[key] = extra.pop(key)
        fields.update(extra)
        redactor = self.redactor
        fields["action"] = action
        fields["entity_type"] = entity_type
        fields["entity_id"] = None if entity_id is None else redactor.redact_text(str(entity_id))
        for name, value in (("old_values", old_values), ("new_values", new_values), ("metadata", metadata)):
            try:
                fields[name] = None if value is None else redactor.redact_json(value, MAX_VALUES_DEPTH)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        if fields["metadata"] is None:
            fields["metadata"] = {}
        if fields.get("user_agent"):
            fields["user_agent"] = redactor.redact_text(fields["user_agent"])
        # The walk above checked JSON-ness and depth; the size bound is checked on the serialized event.
        return AuditEvent.model_validate(fields, context={BOUNDED_BY_BODY: True})

    def publish(
        self,
        action: str,
        entity_type: str,
        entity_id: str | None = None,
        old_values: dict[str, Any] | None = None,
        new_values: dict[str, Any] | None = None,
        *,
        context: RequestContext | None = None,
        **extra: Any,
    ) -> bool:
        """Queue an audit event. True when queued; False when dropped (counted, logged). Never raises."""
        try:
            event = self.build(
                action, entity_type, entity_id, old_values, new_values, context=context, **extra
            )
            body = event.__pydantic_serializer__.to_json(event)
            if len(body) > MAX_VALUES_BYTES:
                # One of the values may be over its bound: the full checks decide (rare: large events only).
                AuditEvent.model_validate(event.model_dump())
        except Exception as exc:
            self.stats.invalid += 1
            self._log.warning("invalid", "audit event %r dropped: invalid: %s", action, _short(exc))
            return False
        return self.publish_event_bytes(body)

    def publish_event(self, event: AuditEvent) -> bool:
        """Queue an already built event (redaction is the builder's business). Never raises."""
        try:
            body = event.__pydantic_serializer__.to_json(event)
        except Exception as exc:  # pragma: no cover - a validated model serializes
            self.stats.invalid += 1
            self._log.warning("invalid", "audit event dropped: %s", _short(exc))
            return False
        return self.publish_event_bytes(body)

    def publish_event_bytes(self, body: bytes) -> bool:
        try:
            queued = self._sink_offer(body)
        except Exception as exc:  # a sink must not raise; if one does, the caller still must not see it
            queued = False
            self._log.warning("sink", "audit sink failed: %s", _short(exc))
        if queued:
            self.stats.published += 1
        else:
            self.stats.dropped += 1
            self._log.warning("dropped", "audit event dropped: the transport's queue is full or it is down")
        return queued


def _short(exc: BaseException) -> str:
    return str(exc).replace("\n", " ")[:300]


class AuditPublisher(_PublisherBase):
    """Publishes audit events from sync code (WSGI apps, threads, workers)."""

    def __init__(self, sink: PublishSink, *, redactor: Redactor = DEFAULT_REDACTOR) -> None:
        super().__init__(redactor=redactor)
        self.sink = sink

    def _sink_offer(self, body: bytes) -> bool:
        return self.sink.offer(body)

    @classmethod
    def from_url(
        cls, url: str, options: AuditOptions | None = None, *, redactor: Redactor = DEFAULT_REDACTOR
    ) -> AuditPublisher:
        """Redis Streams (``redis://``, ``memory://``, …) or RabbitMQ (``amqp://``, needs the ``[amqp]``
        extra)."""
        options = options or AuditOptions()
        if is_amqp_url(url):
            from ._amqp import AmqpSink

            return cls(AmqpSink(url, options), redactor=redactor)
        from llmproxy.core import WriteBehind, fail_fast_redis_options, redis_from_url

        from ._redis_streams import StreamSink

        redis = redis_from_url(url, **fail_fast_redis_options(url))
        write_behind = WriteBehind(redis, max_queue=options.buffer_size, name="audit")
        return cls(StreamSink(write_behind, options, owned=True), redactor=redactor)

    @classmethod
    def on_redis(
        cls, redis: Any, options: AuditOptions | None = None, *, redactor: Redactor = DEFAULT_REDACTOR
    ) -> AuditPublisher:
        """Redis Streams over an existing client: events leave in the write-behind every concern shares for
        ``redis`` (:meth:`~llmproxy.core.WriteBehind.for_client`), in the same pipelines as quota's settles
        and metering's records, so an event costs no round trip of its own. Closing the publisher leaves the
        client and its write-behind to their owner."""
        from llmproxy.core import WriteBehind

        from ._redis_streams import StreamSink

        return cls(StreamSink(WriteBehind.for_client(redis), options or AuditOptions()), redactor=redactor)

    def flush(self, timeout: float = 5.0) -> bool:
        return self.sink.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is buffered (at most ``timeout`` seconds), then stop."""
        self.sink.close(timeout)

    def __enter__(self) -> AuditPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncAuditPublisher(_PublisherBase):
    """Publishes audit events from asyncio code (ASGI apps, async workers). ``publish`` is a plain call."""

    def __init__(self, sink: AsyncPublishSink, *, redactor: Redactor = DEFAULT_REDACTOR) -> None:
        super().__init__(redactor=redactor)
        self.sink = sink

    def _sink_offer(self, body: bytes) -> bool:
        return self.sink.offer(body)

    @classmethod
    def from_url(
        cls, url: str, options: AuditOptions | None = None, *, redactor: Redactor = DEFAULT_REDACTOR
    ) -> AsyncAuditPublisher:
        options = options or AuditOptions()
        if is_amqp_url(url):
            from ._amqp_async import AsyncAmqpSink

            return cls(AsyncAmqpSink(url, options), redactor=redactor)
        from llmproxy.core import AsyncWriteBehind, async_redis_from_url, fail_fast_redis_options

        from ._redis_streams import AsyncStreamSink

        redis = async_redis_from_url(url, **fail_fast_redis_options(url))
        write_behind = AsyncWriteBehind(redis, max_queue=options.buffer_size, name="audit")
        return cls(AsyncStreamSink(write_behind, options, owned=True), redactor=redactor)

    @classmethod
    def on_redis(
        cls, redis: Any, options: AuditOptions | None = None, *, redactor: Redactor = DEFAULT_REDACTOR
    ) -> AsyncAuditPublisher:
        """The asyncio :meth:`AuditPublisher.on_redis`: over the write-behind shared for this asyncio client
        (:meth:`~llmproxy.core.AsyncWriteBehind.for_client`)."""
        from llmproxy.core import AsyncWriteBehind

        from ._redis_streams import AsyncStreamSink

        sink = AsyncStreamSink(AsyncWriteBehind.for_client(redis), options or AuditOptions())
        return cls(sink, redactor=redactor)

    async def flush(self) -> bool:
        return await self.sink.flush()

    async def aclose(self) -> None:
        await self.sink.aclose()
