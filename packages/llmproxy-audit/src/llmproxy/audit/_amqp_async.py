"""The asyncio RabbitMQ publishing sink (``aio-pika``): a bounded buffer and a task publishing with confirms.

Same topology and the same rules as the sync sink in ``_amqp.py``; batches are published concurrently, so the
broker's confirms come back together instead of one round trip per event.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

from ._amqp import ROUTING_KEY, topology
from ._options import AuditOptions
from ._transport import SinkStats

logger = logging.getLogger("llmproxy.audit.amqp")


class AsyncAmqpSink:
    def __init__(self, url: str, options: AuditOptions, *, batch: int = 200) -> None:
        self.url = url
        self.options = options
        self.topology = topology(options)
        self.batch = batch
        self._stats = SinkStats()
        self._buffer: collections.deque[bytes] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._inflight = 0
        self._connection: Any = None

    @property
    def stats(self) -> SinkStats:
        return self._stats

    def offer(self, body: bytes) -> bool:
        self._stats.offered += 1
        if self._closed or len(self._buffer) >= self.options.buffer_size:
            self._stats.dropped += 1
            return False
        self._buffer.append(body)
        if self._task is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return True  # sent once a loop calls flush()
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name="llmproxy-audit-amqp")
        if self._wake is not None:
            self._wake.set()
        return True

    async def _exchange(self) -> Any:
        import aio_pika

        t = self.topology
        self._connection = await aio_pika.connect(self.url, timeout=2.0)
        channel = await self._connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(t.exchange, aio_pika.ExchangeType.DIRECT, durable=True)
        dlx = await channel.declare_exchange(
            t.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dlq = await channel.declare_queue(
            t.dead_letter_queue, durable=True, arguments=t.dead_letter_arguments
        )
        await dlq.bind(dlx)
        queue = await channel.declare_queue(t.queue, durable=True, arguments=t.queue_arguments)
        await queue.bind(exchange, routing_key=ROUTING_KEY)
        return exchange

    async def _run(self) -> None:
        import aio_pika

        assert self._wake is not None
        delay = self.options.backoff_min
        exchange = None
        while not (self._closed and not self._buffer):
            if not self._buffer:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), 0.5)
                except TimeoutError:
                    continue
            try:
                if exchange is None:
                    exchange = await self._exchange()
                taken = [self._buffer[i] for i in range(min(self.batch, len(self._buffer)))]
                self._inflight = len(taken)
                await asyncio.gather(
                    *(
                        exchange.publish(
                            aio_pika.Message(
                                body,
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                content_type="application/json",
                            ),
                            routing_key=ROUTING_KEY,
                            mandatory=True,
                        )
                        for body in taken
                    )
                )
                for _ in taken:
                    self._buffer.popleft()
                self._stats.delivered += len(taken)
                self._inflight = 0
                delay = self.options.backoff_min
            except Exception as exc:
                self._inflight = 0
                self._stats.send_errors += 1
                logger.warning("RabbitMQ publish failed (retrying in %.1fs): %s", delay, exc)
                exchange = None
                await self._close_connection()
                if self._closed:
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.options.backoff_max)
        await self._close_connection()

    async def _close_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close()
            except Exception:
                pass

    async def flush(self) -> bool:
        if self._buffer and self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        # No deadline of its own: while the broker is down this waits; bound it with asyncio.timeout().
        while self._buffer or self._inflight:
            if self._wake is not None:
                self._wake.set()
            await asyncio.sleep(0.005)
        return not self._buffer

    async def aclose(self) -> None:
        try:
            await asyncio.wait_for(self.flush(), 5.0)
        except TimeoutError:
            pass
        self._closed = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 5.0)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        self._stats.lost += len(self._buffer)
        self._buffer.clear()
