"""RabbitMQ transport (the ``[amqp]`` extra): a quorum queue, publisher confirms, a dead-letter exchange.

Topology (names from ``amqp_prefix``, default ``llmproxy.audit``): a durable direct exchange ``<p>`` bound to
the quorum queue ``<p>.events``; a fanout exchange ``<p>.dead-letter`` bound to the quorum queue
``<p>.dead-letter``. The consumer dead-letters an event itself on its ``max_deliveries``-th failed delivery
(publishing it, confirmed, with its reason in ``x-llmproxy-reason``, then acknowledging it). The queue's
``x-delivery-limit`` of ``max_deliveries - 1`` is the broker's backstop for an event whose last delivery
crashed its consumer: RabbitMQ then dead-letters it (``x-death`` reason ``delivery_limit``) with at-least-once
dead-lettering. Sync side with ``pika``; the asyncio publisher with ``aio-pika`` (``_amqp_async.py``).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._options import AuditOptions
from ._transport import Delivery, SinkStats

logger = logging.getLogger("llmproxy.audit.amqp")

ROUTING_KEY = "events"
REASON_HEADER = "x-llmproxy-reason"
DELIVERIES_HEADER = "x-llmproxy-deliveries"


@dataclass(frozen=True, slots=True)
class Topology:
    exchange: str
    queue: str
    dead_letter_exchange: str
    dead_letter_queue: str
    queue_arguments: dict[str, Any]
    dead_letter_arguments: dict[str, Any]


def topology(options: AuditOptions) -> Topology:
    """The exchanges, queues and their arguments (the same for pika and aio-pika)."""
    p = options.amqp_prefix
    return Topology(
        exchange=p,
        queue=f"{p}.events",
        dead_letter_exchange=f"{p}.dead-letter",
        dead_letter_queue=f"{p}.dead-letter",
        queue_arguments={
            "x-queue-type": "quorum",
            # With limit L RabbitMQ delivers L + 1 times, then dead-letters (measured on 3.10).
            "x-delivery-limit": options.max_deliveries - 1,
            "x-dead-letter-exchange": f"{p}.dead-letter",
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
        dead_letter_arguments={"x-queue-type": "quorum"},
    )


def deliveries_of(headers: dict[str, Any] | None) -> int:
    """Quorum queues count earlier returns in ``x-delivery-count`` (absent on the first delivery)."""
    return int((headers or {}).get("x-delivery-count", 0)) + 1


def _declare(channel: Any, t: Topology) -> None:
    channel.exchange_declare(t.exchange, "direct", durable=True)
    channel.exchange_declare(t.dead_letter_exchange, "fanout", durable=True)
    channel.queue_declare(t.dead_letter_queue, durable=True, arguments=t.dead_letter_arguments)
    channel.queue_bind(t.dead_letter_queue, t.dead_letter_exchange)
    channel.queue_declare(t.queue, durable=True, arguments=t.queue_arguments)
    channel.queue_bind(t.queue, t.exchange, routing_key=ROUTING_KEY)


def _connect(url: str) -> Any:
    import pika

    params = pika.URLParameters(url)
    params.socket_timeout = 2.0
    params.blocked_connection_timeout = 5.0
    params.connection_attempts = 1
    return pika.BlockingConnection(params)


def _properties(message_id: str | None = None, headers: dict[str, Any] | None = None) -> Any:
    import pika

    return pika.BasicProperties(
        delivery_mode=2, content_type="application/json", message_id=message_id, headers=headers
    )


class AmqpConsumerTransport:
    """The consumer side over ``pika.BlockingConnection``; reconnects on the next call after a failure."""

    def __init__(self, url: str, options: AuditOptions) -> None:
        self.url = url
        self.options = options
        self.topology = topology(options)
        self._conn: Any = None
        self._channel: Any = None
        self._confirm: Any = None
        self._generation = 0
        self._buffer: collections.deque[Delivery] = collections.deque()

    def _on_message(self, _channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self._buffer.append(
            Delivery((self._generation, method.delivery_tag), body, deliveries_of(properties.headers))
        )

    def _ensure(self) -> None:
        if self._conn is not None and self._conn.is_open:
            return
        self._drop()
        self._conn = _connect(self.url)
        self._generation += 1
        self._channel = self._conn.channel()
        _declare(self._channel, self.topology)
        # (an overlapping consumer holds two batches unacknowledged: the one it stores, the one it receives)
        self._channel.basic_qos(prefetch_count=self.options.batch_size * (2 if self.options.overlap else 1))
        self._channel.basic_consume(self.topology.queue, self._on_message)
        self._confirm = self._conn.channel()
        self._confirm.confirm_delivery()

    def _drop(self) -> None:
        self._buffer.clear()  # their delivery tags die with the channel; the broker redelivers them
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken
                pass

    def _guard(self, action: Any) -> Any:
        try:
            return action()
        except Exception:
            self._drop()
            raise

    def setup(self) -> None:
        self._guard(self._ensure)

    def receive(self, count: int, wait: float) -> list[Delivery]:
        def pull() -> list[Delivery]:
            self._ensure()
            deadline = time.monotonic() + wait
            while not self._buffer and time.monotonic() < deadline:
                self._conn.process_data_events(time_limit=min(0.05, max(0.0, deadline - time.monotonic())))
            self._conn.process_data_events(time_limit=0)
            out: list[Delivery] = []
            while self._buffer and len(out) < count:
                out.append(self._buffer.popleft())
            return out

        result: list[Delivery] = self._guard(pull)
        return result

    def _current(self, items: Sequence[Delivery]) -> list[int]:
        return [item.handle[1] for item in items if item.handle[0] == self._generation]

    def ack(self, items: Sequence[Delivery]) -> None:
        def do() -> None:
            tags = self._current(items)
            if len(tags) != len(items):
                raise ConnectionError("the channel these were delivered on is gone; they will be redelivered")
            for tag in tags:
                self._channel.basic_ack(tag)

        self._guard(do)

    def release(self, items: Sequence[Delivery]) -> None:
        def do() -> None:
            for tag in self._current(items):
                self._channel.basic_nack(tag, requeue=True)

        self._guard(do)

    def hold(self, items: Sequence[Delivery]) -> None:
        # Unacknowledged deliveries stay ours while the connection lives; keep its heartbeats going.
        if self._conn is not None and self._conn.is_open:
            self._guard(lambda: self._conn.process_data_events(time_limit=0))

    def dead_letter(self, item: Delivery, reason: str) -> None:
        def do() -> None:
            if item.handle[0] != self._generation:
                raise ConnectionError("the channel this was delivered on is gone; it will be redelivered")
            headers = {REASON_HEADER: reason[:2000], DELIVERIES_HEADER: item.deliveries}
            self._confirm.basic_publish(
                self.topology.dead_letter_exchange,
                "",
                item.body,
                _properties(headers=headers),
                mandatory=True,
            )
            self._channel.basic_ack(item.handle[1])

        self._guard(do)

    def close(self) -> None:
        self._drop()


def read_amqp_dead_letters(url: str, options: AuditOptions, count: int = 100) -> list[dict[str, Any]]:
    """The dead-letter queue's messages (peeked: they are put back), as dicts like the Redis transport's."""
    t = topology(options)
    conn = _connect(url)
    try:
        channel = conn.channel()
        _declare(channel, t)
        out: list[dict[str, Any]] = []
        tags: list[int] = []
        while len(out) < count:
            method, properties, body = channel.basic_get(t.dead_letter_queue, auto_ack=False)
            if method is None:
                break
            tags.append(method.delivery_tag)
            headers = properties.headers or {}
            deaths = headers.get("x-death") or [{}]
            out.append(
                {
                    "id": properties.message_id or "",
                    "deliveries": int(headers.get(DELIVERIES_HEADER, 0))
                    or int(options.max_deliveries if deaths[0].get("reason") == "delivery_limit" else 0),
                    "reason": str(headers.get(REASON_HEADER) or f"broker: {deaths[0].get('reason', '?')}"),
                    "body": body,
                }
            )
        for tag in tags:
            channel.basic_nack(tag, requeue=True)
        return out
    finally:
        conn.close()


class AmqpSink:
    """Sync publishing sink: a bounded buffer and a background thread publishing with confirms.

    ``offer`` appends (or drops and counts when the buffer is full). The thread publishes each event
    persistent and mandatory, waiting for the broker's confirm; an unconfirmed event stays at the head of the
    buffer and is sent again after a reconnect (a duplicate, if the confirm was lost, is discarded by the
    store).
    """

    def __init__(self, url: str, options: AuditOptions) -> None:
        self.url = url
        self.options = options
        self.topology = topology(options)
        self._stats = SinkStats()
        self._buffer: collections.deque[bytes] = collections.deque()
        self._wake = threading.Condition()
        self._closed = False
        self._inflight = 0
        self._thread = threading.Thread(target=self._run, name="llmproxy-audit-amqp", daemon=True)
        self._thread.start()

    @property
    def stats(self) -> SinkStats:
        return self._stats

    def offer(self, body: bytes) -> bool:
        self._stats.offered += 1
        if self._closed or len(self._buffer) >= self.options.buffer_size:
            self._stats.dropped += 1
            return False
        self._buffer.append(body)
        if len(self._buffer) == 1:
            with self._wake:
                self._wake.notify()
        return True

    def _run(self) -> None:
        delay = self.options.backoff_min
        conn = channel = None
        while True:
            with self._wake:
                while not self._buffer and not self._closed:
                    self._wake.wait(0.5)
                if self._closed and not self._buffer:
                    break
            try:
                if conn is None or not conn.is_open:
                    conn = _connect(self.url)
                    channel = conn.channel()
                    _declare(channel, self.topology)
                    channel.confirm_delivery()
                while self._buffer:
                    body = self._buffer[0]
                    self._inflight = 1
                    channel.basic_publish(  # type: ignore[union-attr]
                        self.topology.exchange, ROUTING_KEY, body, _properties(), mandatory=True
                    )
                    self._buffer.popleft()
                    self._inflight = 0
                    self._stats.delivered += 1
                delay = self.options.backoff_min
            except Exception as exc:
                self._inflight = 0
                self._stats.send_errors += 1
                logger.warning("RabbitMQ publish failed (retrying in %.1fs): %s", delay, exc)
                try:
                    if conn is not None:
                        conn.close()
                except Exception:
                    pass
                conn = None
                if self._closed:
                    break
                with self._wake:
                    self._wake.wait(delay)
                delay = min(delay * 2, self.options.backoff_max)
        if conn is not None and conn.is_open:
            conn.close()

    def flush(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while (self._buffer or self._inflight) and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._buffer

    def close(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        self._closed = True
        with self._wake:
            self._wake.notify_all()
        self._thread.join(5.0)
        self._stats.lost += len(self._buffer)
        self._buffer.clear()
