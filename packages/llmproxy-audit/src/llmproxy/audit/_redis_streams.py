"""Redis Streams transport: XADD with approximate MAXLEN, one consumer group, XAUTOCLAIM, a dead-letter
stream.

Publishing goes through core's write-behind (``["XADD", …]`` enqueued, leaving with the next pipeline), so a
publish costs no round trip of its own. Consuming: ``XREADGROUP >`` for new entries; every ``claim_idle / 2``
seconds a script reclaims entries idle longer than ``claim_idle`` (a consumer died or stalled on them) and
dead-letters those delivered more than ``max_deliveries`` times. Acknowledged entries are deleted (``XACK`` +
``XDEL``), so the stream holds only the backlog and MAXLEN bounds it during an outage.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Sequence
from importlib import resources
from typing import Any

from llmproxy.core import (
    AsyncWriteBehind,
    PackedCommand,
    SyncRedis,
    WriteBehind,
    WriteBehindStats,
    resp_head,
)

from ._options import AuditOptions
from ._transport import Delivery, SinkStats


def _script(name: str) -> str:
    return resources.files(__package__).joinpath("scripts", name).read_text("utf-8")


CLAIM_SOURCE = _script("claim.lua")
DEAD_LETTER_SOURCE = _script("dead_letter.lua")


def xadd_command(options: AuditOptions, body: bytes) -> list[Any]:
    return ["XADD", options.stream, "MAXLEN", "~", options.maxlen, "*", "e", body]


class _Xadd:
    """The XADD of an event, its RESP encoded once but for the body (see core's ``PackedCommand``)."""

    def __init__(self, options: AuditOptions) -> None:
        self.args = xadd_command(options, b"")[:-1]
        self.head = resp_head(self.args, len(self.args) + 1)

    def __call__(self, body: bytes) -> PackedCommand:
        return PackedCommand([*self.args, body], b"%b$%d\r\n%b\r\n" % (self.head, len(body), body))


class _StreamSinkBase:
    def __init__(self, options: AuditOptions) -> None:
        self.options = options
        self._stats = SinkStats()

    def _write_behind_stats(self) -> WriteBehindStats:
        raise NotImplementedError

    @property
    def stats(self) -> SinkStats:
        """``delivered`` and ``lost`` come from the write-behind: shared with other packages' writes when the
        write-behind is (``for_client``), so they count those writes too."""
        wb = self._write_behind_stats()
        self._stats.delivered = wb.sent
        self._stats.lost = wb.failed
        return self._stats

    def _offered(self, enqueued: bool) -> bool:
        self._stats.offered += 1
        if not enqueued:
            self._stats.dropped += 1
        return enqueued


class StreamSink(_StreamSinkBase):
    """Sync publishing sink over a :class:`WriteBehind` (its flusher thread sends the XADDs)."""

    def __init__(self, write_behind: WriteBehind, options: AuditOptions, *, owned: bool = False) -> None:
        super().__init__(options)
        self.write_behind = write_behind
        self._owned = owned
        self._xadd = _Xadd(options)

    def _write_behind_stats(self) -> WriteBehindStats:
        return self.write_behind.stats

    def offer(self, body: bytes) -> bool:
        return self._offered(self.write_behind.enqueue(self._xadd(body)))

    def flush(self, timeout: float = 5.0) -> bool:
        self.write_behind.flush()
        return True

    def close(self, timeout: float = 5.0) -> None:
        if self._owned:  # its write-behind and Redis client were made for this sink
            self.write_behind.close()
            self.write_behind.redis.close()
        else:
            self.write_behind.flush()


class AsyncStreamSink(_StreamSinkBase):
    """Asyncio publishing sink over an :class:`AsyncWriteBehind`."""

    def __init__(self, write_behind: AsyncWriteBehind, options: AuditOptions, *, owned: bool = False) -> None:
        super().__init__(options)
        self.write_behind = write_behind
        self._owned = owned
        self._xadd = _Xadd(options)

    def _write_behind_stats(self) -> WriteBehindStats:
        return self.write_behind.stats

    def offer(self, body: bytes) -> bool:
        return self._offered(self.write_behind.enqueue(self._xadd(body)))

    async def flush(self) -> bool:
        await self.write_behind.flush()
        return True

    async def aclose(self) -> None:
        if self._owned:  # its write-behind and Redis client were made for this sink
            await self.write_behind.aclose()
            await self.write_behind.redis.aclose()
        else:
            await self.write_behind.flush()


def consumer_name() -> str:
    """Unique per process start: a restarted consumer's old pending entries are reclaimed, not resumed."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class StreamConsumerTransport:
    """The consumer side over a sync redis-py client (or fakeredis for ``memory://``)."""

    def __init__(self, redis: SyncRedis, options: AuditOptions, *, name: str | None = None) -> None:
        self.redis = redis
        self.options = options
        self.name = name or consumer_name()
        self.dead_lettered = 0
        self._keys = [options.stream, options.dead_letter_stream]
        self._next_claim = 0.0
        # redis-py's Script objects load the source again on NOSCRIPT (a restarted or failed-over server).
        self._claim_script = redis.register_script(CLAIM_SOURCE)
        self._dead_letter_script = redis.register_script(DEAD_LETTER_SOURCE)

    def setup(self) -> None:
        import redis as redis_lib

        try:
            # From id 0: events published before any consumer existed are consumed too.
            self.redis.xgroup_create(self.options.stream, self.options.group, id="0", mkstream=True)
        except redis_lib.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _claim(self, count: int) -> list[Delivery]:
        o = self.options
        reply = self._claim_script(
            self._keys,
            [o.group, self.name, int(o.claim_idle * 1000), count, o.max_deliveries, o.dead_letter_maxlen,
             int(time.time() * 1000)],
        )  # fmt: skip
        self.dead_lettered += int(reply[0])
        return [Delivery(_text(entry[0]), bytes(entry[1]), int(entry[2])) for entry in reply[1:]]

    def receive(self, count: int, wait: float) -> list[Delivery]:
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self.options.claim_idle / 2
            claimed = self._claim(count)
            if claimed:
                return claimed
        reply: Any = self.redis.xreadgroup(
            self.options.group,
            self.name,
            {self.options.stream: ">"},
            count=count,
            block=max(1, int(wait * 1000)),
        )
        out: list[Delivery] = []
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                body = (fields or {}).get(b"e", (fields or {}).get("e", b""))
                out.append(Delivery(_text(entry_id), body if isinstance(body, bytes) else body.encode(), 1))
        return out

    def ack(self, items: Sequence[Delivery]) -> None:
        if not items:
            return
        ids = [item.handle for item in items]
        pipe = self.redis.pipeline(transaction=True)
        pipe.xack(self.options.stream, self.options.group, *ids)
        pipe.xdel(self.options.stream, *ids)
        pipe.execute()

    def release(self, items: Sequence[Delivery]) -> None:
        # Left pending: reclaimed (by any consumer) once idle for claim_idle seconds.
        return None

    def hold(self, items: Sequence[Delivery]) -> None:
        if items:
            # JUSTID claims do not count as deliveries; they only reset the idle time.
            self.redis.xclaim(
                self.options.stream, self.options.group, self.name, 0, [i.handle for i in items], justid=True
            )

    def dead_letter(self, item: Delivery, reason: str) -> None:
        o = self.options
        self._dead_letter_script(
            self._keys,
            [o.group, item.handle, o.dead_letter_maxlen, item.deliveries, reason[:2000],
             int(time.time() * 1000), item.body],
        )  # fmt: skip
        self.dead_lettered += 1

    def close(self) -> None:
        return None


def read_dead_letters(redis: SyncRedis, options: AuditOptions, count: int = 100) -> list[dict[str, Any]]:
    """Dead-letter entries, oldest first: dicts of ``id``, ``deliveries``, ``reason``, ``body``."""
    out: list[dict[str, Any]] = []
    entries: Any = redis.xrange(options.dead_letter_stream, count=count)
    for entry_id, fields in entries:
        f = {_text(k): v for k, v in fields.items()}
        out.append(
            {
                "entry": _text(entry_id),
                "id": _text(f.get("id", b"")),
                "deliveries": int(f.get("deliveries", 0)),
                "reason": _text(f.get("reason", b"")),
                "body": bytes(f.get("e", b"")),
            }
        )
    return out
