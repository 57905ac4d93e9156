"""A connection held for a client's hot calls: one command (or one batch), its reply, without redis-py's
per-call machinery.

``Redis.execute_command`` takes a connection from the pool and gives it back on every call; with redis-py 7's
pool bookkeeping (locks, events, connection-count metrics) and its per-command observability, that costs
~10 µs of a ~30 µs loopback round trip (sync), ~15 µs (asyncio), measured. A line therefore takes one
connection from its Redis client's pool once (as redis-py's own PubSub does) and sends each call on it:
``send_command`` / ``read_response``, under the connection's own retry policy (the one ``execute_command``
would apply), and the pool's own stale-connection check before each call. The pool gets it back on
``close()`` / ``aclose()``. Replies are never decoded (bytes, as the scripts' binary replies need).

One call at a time uses it: a call that finds it busy (another thread, another task) goes through
``execute_command`` (or a redis-py pipeline) as before. Clients it cannot serve this way (Redis Cluster, a
single-connection client, a pool under 16 connections, a pool with client-side caching) always do. A forked
child, or a new event loop, takes a new connection.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import redis.exceptions
from redis.client import NEVER_DECODE

#: the reply is binary (see quota.lua): read it as bytes even from a client with decode_responses=True
RAW = {NEVER_DECODE: True}

Command = Sequence[Any]  # EVALSHA's arguments, "EVALSHA" first


class PackedCommand(list[Any]):
    """A command's arguments (it is that list) with their RESP encoding, ``packed``, made by the caller.

    A line sends ``packed`` as it is instead of encoding every argument again (redis-py's ``pack_command``
    is some microseconds of Python per command: most of a write-behind's cost for a stream of XADDs whose
    arguments differ only in the last one). Everywhere else (a redis-py pipeline, a cluster, fakeredis) it is
    just the argument list. :func:`resp_head` and :func:`resp_bulk` build ``packed``.
    """

    __slots__ = ("packed",)

    def __init__(self, args: Sequence[Any], packed: bytes) -> None:
        super().__init__(args)
        self.packed = packed


def _resp_arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value).encode()
    raise TypeError(f"a Redis argument must be bytes, str, int or float, not {type(value).__name__}")


def resp_bulk(value: Any) -> bytes:
    """One argument in RESP (``$<length>\r\n<bytes>\r\n``; str as UTF-8, numbers as redis-py writes them)."""
    data = _resp_arg(value)
    return b"$%d\r\n%b\r\n" % (len(data), data)


def resp_head(args: Sequence[Any], total: int) -> bytes:
    """The RESP of a ``total``-argument command's first ``args``; append ``resp_bulk`` of the rest."""
    if total < len(args):
        raise ValueError("total counts every argument, the ones in args included")
    return b"*%d\r\n" % total + b"".join(resp_bulk(a) for a in args)


def _packed(conn: Any, commands: Sequence[Command]) -> list[bytes]:
    """The commands in one write: a :class:`PackedCommand` as its caller encoded it, others by redis-py."""
    if not any(type(c) is PackedCommand for c in commands):
        packed: list[bytes] = conn.pack_commands(commands)
        return packed
    out: list[bytes] = []
    run: list[Command] = []
    for command in commands:
        if type(command) is PackedCommand:
            if run:
                out.extend(conn.pack_commands(run))
                run = []
            out.append(command.packed)
        else:
            run.append(command)
    if run:
        out.extend(conn.pack_commands(run))
    return [b"".join(out)]  # one write (redis-py sends each item of a list with a call of its own)


#: a pool smaller than this is left whole: held for good, one connection would be missed by the app's commands
MIN_POOL = 16


def _pool(redis: Any) -> Any:
    """The client's connection pool if calls can be sent on a connection of it, else None."""
    # a single-connection client (the asyncio one makes its connection lazily: the flag tells)
    if getattr(redis, "connection", None) is not None or getattr(redis, "single_connection_client", False):
        return None
    pool = getattr(redis, "connection_pool", None)  # (a RedisCluster has none: one pool per node)
    if pool is None or not hasattr(pool, "get_connection") or not hasattr(pool, "release"):
        return None
    if getattr(pool, "max_connections", MIN_POOL) < MIN_POOL:
        return None
    if getattr(pool, "cache", None) is not None:  # client-side caching: invalidations arrive on connections
        return None
    return pool


def _checkout_args(pool: Any) -> tuple[str, ...]:
    """``get_connection``'s arguments: none since redis-py 6 (any is deprecated), a command name before."""
    try:
        parameter = inspect.signature(pool.get_connection).parameters.get("command_name")
    except (TypeError, ValueError):
        return ()
    return ("EVALSHA",) if parameter is not None and parameter.default is inspect.Parameter.empty else ()


_STALE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def _check(conn: Any, pushes: bool) -> None:
    """What the pool checks at every checkout: a connection the server closed, or (unless the server may push
    maintenance notifications on it) with a stray reply, is not ready for a command; it is dropped, and the
    send reconnects.

    A connection that is not connected is left alone: ``can_read()`` would connect it (under the socket's
    connect timeout) just to look, and the send then connects again: with a stalled server every call paid
    two timeouts."""
    # (its socket read first, as redis-py's own can_read() does: the is_connected property is a Python call
    # on every admit; a connection class without _sock, a proxy, answers through the property)
    if getattr(conn, "_sock", None) is None and not getattr(conn, "is_connected", False):
        return
    try:
        if conn.can_read() and not pushes:
            raise ConnectionError("connection has data")
    except _STALE:
        conn.disconnect()


async def _acheck(conn: Any) -> None:
    reader = getattr(conn, "_reader", None)
    if reader is not None and isinstance(getattr(reader, "_buffer", None), bytearray):
        # the stream the connection reads from, checked directly (as redis-py does itself elsewhere): the
        # parser's can_read_destructive() asks the same of it under a zero timeout, which costs ~4 µs a call.
        # (The parser's own buffer is empty between calls: a call that stops mid-reply disconnects.)
        if reader.at_eof() or reader.exception() is not None or reader._buffer:
            await conn.disconnect()
        return
    # redis-py 8 names it can_read() (can_read_destructive() is deprecated there); before 8 an asyncio
    # connection has only can_read_destructive()
    probe = conn.can_read if inspect.iscoroutinefunction(getattr(type(conn), "can_read", None)) else None
    try:
        if await (probe or conn.can_read_destructive)():
            raise ConnectionError("connection has data")
    except _STALE:
        await conn.disconnect()


class _Line:
    """What both shells hold: the client, its pool (None: every call goes through ``execute_command``, as
    after closing), the connection taken from it, and how this redis-py version checks one out."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.pool = _pool(redis)
        self._conn: Any = None
        self._args = _checkout_args(self.pool) if self.pool is not None else ()
        # redis-py 7's maintenance handling (connections it asks to reconnect); absent before
        self._maintenance = hasattr(getattr(self.pool, "connection_class", None), "should_reconnect")


_LINES: weakref.WeakSet[DirectLine] = weakref.WeakSet()


def _after_fork() -> None:
    # the child must not use the parent's socket (redis-py's pool leaves it alone in the child too); and a
    # thread of the parent may have held a line's lock at the fork: the child's copy would stay locked
    for line in list(_LINES):
        line._lock = threading.Lock()
        line._conn = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class DirectLine(_Line):
    """A sync client's held connection (thread-safe: one caller at a time, the others take the pool's)."""

    def __init__(self, redis: Any) -> None:
        super().__init__(redis)
        self._lock = threading.Lock()
        enabled = getattr(self.pool, "maint_notifications_enabled", None)
        self._pushes = bool(enabled()) if callable(enabled) else False
        _LINES.add(self)

    def call(self, command: Command) -> Any:
        lock = self._lock
        if self.pool is None or not lock.acquire(blocking=False):
            return self.redis.execute_command(*command, **RAW)
        try:
            pool = self.pool
            if pool is None:  # closed while this call waited for the lock
                return self.redis.execute_command(*command, **RAW)
            conn = self._conn
            if conn is None:
                conn = self._conn = pool.get_connection(*self._args)
            else:
                _check(conn, self._pushes)

            def exchange() -> Any:
                if type(command) is PackedCommand:
                    conn.send_packed_command([command.packed])
                else:
                    conn.send_command(*command)
                return conn.read_response(disable_decoding=True)

            try:
                return conn.retry.call_with_retry(exchange, lambda _error: conn.disconnect())
            finally:
                if self._maintenance and conn.should_reconnect():  # the server announced maintenance
                    conn.disconnect()
                    conn.reset_should_reconnect()
        finally:
            lock.release()

    def call_many(self, commands: Sequence[Command]) -> list[Any]:
        """Several calls in one write, their replies in one read (a pipeline without MULTI). A reply that is
        an error comes back as its exception, in its place."""
        lock = self._lock
        if self.pool is None or not lock.acquire(blocking=False):
            return _pipeline(self.redis, commands)
        try:
            pool = self.pool
            if pool is None:
                return _pipeline(self.redis, commands)
            conn = self._conn
            if conn is None:
                conn = self._conn = pool.get_connection(*self._args)
            else:
                _check(conn, self._pushes)

            def exchange() -> list[Any]:
                conn.send_packed_command(_packed(conn, commands))
                replies: list[Any] = []
                for _ in commands:
                    try:
                        replies.append(conn.read_response(disable_decoding=True))
                    except redis.exceptions.ResponseError as exc:  # read whole: the next reply follows
                        replies.append(exc)
                return replies

            try:
                replies: list[Any] = conn.retry.call_with_retry(exchange, lambda _error: conn.disconnect())
                return replies
            finally:
                if self._maintenance and conn.should_reconnect():
                    conn.disconnect()
                    conn.reset_should_reconnect()
        finally:
            lock.release()

    def close(self) -> None:
        """Give the connection back to the pool (after the call in flight, if any); later calls take the
        pool's."""
        with self._lock:
            pool, self.pool = self.pool, None
            conn, self._conn = self._conn, None
            if conn is not None:
                pool.release(conn)


def _pipeline(redis: Any, commands: Sequence[Command]) -> list[Any]:
    pipe = redis.pipeline(transaction=False)
    try:
        for command in commands:
            pipe.execute_command(*command, **RAW)
        results: list[Any] = pipe.execute(raise_on_error=False)
        return results
    finally:
        pipe.reset()


async def _read_replies(conn: Any, n: int) -> list[Any]:
    """``n`` replies, an error reply as its exception in its place. One deadline (the socket timeout) for
    them all: redis-py arms an asyncio timer for each read, most of the cost of reading many small replies."""
    replies: list[Any] = []
    try:
        async with asyncio.timeout(conn.socket_timeout):
            for _ in range(n):
                try:
                    replies.append(await conn.read_response(disable_decoding=True, timeout=math.inf))
                except redis.exceptions.ResponseError as exc:  # read whole: the next reply follows
                    replies.append(exc)
    except TimeoutError as exc:  # redis-py disconnected it: a read was interrupted, maybe mid-reply
        raise redis.exceptions.TimeoutError(f"Timeout reading {n} replies") from exc
    return replies


def _redis_send() -> Any:
    """redis-py's own ``send_packed_command`` of asyncio connections (None where it is not found: then every
    write goes through the connection's method)."""
    try:
        from redis.asyncio.connection import AbstractConnection
    except ImportError:  # pragma: no cover - another redis-py layout
        return None
    return getattr(AbstractConnection, "send_packed_command", None)


_PLAIN_SEND = _redis_send()


async def _asend(conn: Any, packed: list[bytes]) -> None:
    """``conn.send_packed_command(packed)`` without redis-py's ``asyncio.wait_for`` around every write (a task
    and a timer each time: about a third of a held connection's call, counted). The bytes go to the transport
    at once, as redis-py's write does; only a write the kernel did not take whole waits for the drain, under
    the socket timeout. Errors end as redis-py's do: the connection dropped, ``ConnectionError`` /
    ``TimeoutError`` raised (the retry policy knows those). A connection that is not plainly connected, that
    checks its health before writes, or whose class has a ``send_packed_command`` of its own (instrumentation
    counting round trips, a test's) goes through that method."""
    writer = getattr(conn, "_writer", None)
    if (
        writer is None
        or type(conn).send_packed_command is not _PLAIN_SEND  # (never, when it was not found)
        or not conn.is_connected
        or conn.health_check_interval
        or writer.transport.is_closing()
    ):
        await conn.send_packed_command(packed)
        return
    buffered = getattr(writer.transport, "get_write_buffer_size", None)  # (fakeredis's transport has none)
    try:
        writer.writelines(packed)
        if buffered is None or buffered():
            async with asyncio.timeout(conn.socket_timeout):
                await writer.drain()
    except BaseException as exc:  # (as redis-py: a write cut short leaves the protocol out of step)
        await conn.disconnect(nowait=True)
        if isinstance(exc, TimeoutError):
            raise redis.exceptions.TimeoutError("Timeout writing to socket") from None
        if isinstance(exc, OSError):
            raise redis.exceptions.ConnectionError(f"Error while writing to socket: {exc}") from exc
        raise


class AsyncDirectLine(_Line):
    """An asyncio client's held connection (one task at a time uses it, the others take the pool's)."""

    def __init__(self, redis: Any) -> None:
        super().__init__(redis)
        self._busy = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def call(self, command: Command) -> Any:
        """One call's reply."""
        if self.pool is None or self._busy:
            return await self.redis.execute_command(*command, **RAW)
        return await self._exchange([command], True)

    async def call_many(self, commands: Sequence[Command]) -> list[Any]:
        """Several calls in one write, their replies in one read (a pipeline without MULTI). A reply that is
        an error comes back as its exception, in its place."""
        if self.pool is None or self._busy:
            pipe = self.redis.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command, **RAW)
            try:
                results: list[Any] = await pipe.execute(raise_on_error=False)
            finally:
                await pipe.reset()
            return results
        replies: list[Any] = await self._exchange(commands, False)
        return replies

    async def _exchange(self, commands: Sequence[Command], single: bool) -> Any:
        self._busy = True
        pool = self.pool
        try:
            conn = self._conn
            if conn is None or self._loop is not asyncio.get_running_loop():
                conn = await self._take(pool)
            elif conn.is_connected:
                await _acheck(conn)

            async def exchange() -> Any:
                await _asend(conn, _packed(conn, commands))
                # a cancellation or error mid-exchange disconnects it (redis-py): no reply is left unread
                if single:
                    return await conn.read_response(disable_decoding=True)
                return await _read_replies(conn, len(commands))

            try:
                return await conn.retry.call_with_retry(exchange, lambda _error: conn.disconnect())
            finally:
                if self._maintenance and conn.should_reconnect():  # marked (maintenance, failover)
                    await conn.disconnect()
                    conn.reset_should_reconnect()
        finally:
            self._busy = False
            if self.pool is None:  # closed while this call was in flight: the pool gets it back now
                await self._give_back(pool)

    async def _take(self, pool: Any) -> Any:
        old, self._conn = self._conn, None
        if old is not None:  # bound to an event loop that is gone: the pool reconnects it when next used
            try:
                await old.disconnect(nowait=True)
            except Exception:  # closing a dead loop's transport: nothing to do about it
                pass
            await pool.release(old)
        conn = await pool.get_connection(*self._args)
        self._conn, self._loop = conn, asyncio.get_running_loop()
        return conn

    async def aclose(self) -> None:
        """Give the connection back to the pool (a call in flight gives it back when it ends); later calls
        take the pool's."""
        pool, self.pool = self.pool, None
        if not self._busy:
            await self._give_back(pool)

    async def _give_back(self, pool: Any) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await pool.release(conn)
