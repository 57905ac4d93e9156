"""One transport interface: the publisher offers bytes, the consumer receives deliveries and settles them.

The publisher and consumer never learn which broker carries the events; ``transport_from_url`` picks Redis
Streams (``redis://``, ``rediss://``, ``redis+cluster://``, ``redis+sentinel://``, ``memory://``) or RabbitMQ
(``amqp://``, ``amqps://``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of one event: the broker's handle, the serialized event, and its delivery number (1 =
    first)."""

    handle: Any
    body: bytes
    deliveries: int


@dataclass(slots=True)
class SinkStats:
    """What a publishing sink did with the events offered to it.

    ``dropped``: refused at once (buffer full, closed). ``delivered``: the broker has them. ``lost``: taken,
    then given up (the send failed and was not retried, or still buffered at close). ``send_errors``: failed
    send attempts (a retried attempt counts here, its events are not lost).
    """

    offered: int = 0
    dropped: int = 0
    delivered: int = 0
    lost: int = 0
    send_errors: int = 0

    def snapshot(self) -> dict[str, int]:
        return {
            "offered": self.offered,
            "dropped": self.dropped,
            "delivered": self.delivered,
            "lost": self.lost,
            "send_errors": self.send_errors,
        }


class PublishSink(Protocol):
    """Where a sync publisher puts serialized events. ``offer`` never blocks and never raises."""

    def offer(self, body: bytes) -> bool: ...

    def flush(self, timeout: float = 5.0) -> bool: ...

    def close(self, timeout: float = 5.0) -> None:
        """Send what is buffered (waiting at most ``timeout`` seconds), then stop; the rest counts as lost."""

    @property
    def stats(self) -> SinkStats: ...


class AsyncPublishSink(Protocol):
    """The asyncio twin: ``offer`` is a plain call (it only enqueues)."""

    def offer(self, body: bytes) -> bool: ...

    async def flush(self) -> bool: ...

    async def aclose(self) -> None: ...

    @property
    def stats(self) -> SinkStats: ...


class ConsumerTransport(Protocol):
    """What a consumer needs from a broker (sync; the consumer is a worker thread or process)."""

    def setup(self) -> None:
        """Declare what must exist (consumer group; queues and exchanges)."""

    def receive(self, count: int, wait: float) -> list[Delivery]:
        """Up to ``count`` deliveries: reclaimed ones first, else new ones, waiting at most ``wait``
        seconds."""

    def ack(self, items: Sequence[Delivery]) -> None:
        """Done: never deliver these again."""

    def release(self, items: Sequence[Delivery]) -> None:
        """Failed: deliver again later (the delivery number grows)."""

    def hold(self, items: Sequence[Delivery]) -> None:
        """Still working on these (the database is down): keep them from being reclaimed by another
        consumer."""

    def dead_letter(self, item: Delivery, reason: str) -> None:
        """Write to the dead-letter stream or queue with ``reason``, then acknowledge."""

    def close(self) -> None: ...


def is_amqp_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in ("amqp", "amqps")
