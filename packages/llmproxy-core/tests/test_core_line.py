"""The held line (``llmproxy.core._line``): one connection a write-behind takes from its client's pool and
sends its calls on; clients it cannot serve keep the pool; batches keep error replies in place; closing
during a call and forking during a call leave everything usable. (quota's test_quota_stalled_redis.py shows
the stale check leaving a disconnected connection alone.)"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio
import redis.exceptions

from llmproxy.core import PackedCommand, async_redis_from_url, redis_from_url, resp_bulk, resp_head
from llmproxy.core._line import AsyncDirectLine, DirectLine

COMMANDS = [
    ("SET", "{k}", "1"),
    ("INCR", "{k}"),
    ("HGET", "{k}", "f"),  # an error reply (WRONGTYPE) in the middle
    ("INCRBY", "{k}", "5"),
    ("GET", "{k}"),
]


def batch(key: str) -> list[tuple[str, ...]]:
    return [tuple(part.format(k=key) for part in command) for command in COMMANDS]


def check_batch_replies(replies: list[Any]) -> None:
    assert replies[0] is True or replies[0] == b"OK"
    assert replies[1] == 2
    assert isinstance(replies[2], redis.exceptions.ResponseError)  # WRONGTYPE, in its place
    assert replies[3:] == [7, b"7"]


def test_clients_the_line_cannot_serve_use_the_pool(real_redis_url: str) -> None:
    for client in (
        redis.Redis.from_url(real_redis_url, single_connection_client=True),
        redis.Redis(connection_pool=redis.ConnectionPool.from_url(real_redis_url, max_connections=15)),
    ):
        line = DirectLine(client)
        assert line.pool is None
        assert [line.call(("INCR", "n")) for _ in range(3)][-1] >= 3
        client.ping()  # the pool's one connection is free for other commands
        line.close()
        client.close()
    client = redis.Redis.from_url(real_redis_url)
    assert DirectLine(client).pool is not None
    client.close()


def test_an_asyncio_single_connection_client_keeps_its_one_connection(real_redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(real_redis_url, single_connection_client=True)
    assert AsyncDirectLine(client).pool is None


def test_several_sync_calls_share_one_write_and_errors_stay_in_their_place(redis_url: str) -> None:
    """``call_many`` on the held connection and through redis-py's pipeline (the line busy) answer alike."""
    client = redis_from_url(redis_url)
    line = DirectLine(client)
    key = f"k-{uuid.uuid4().hex}"
    for busy in (False, True):
        client.delete(key)
        if busy:
            line._lock.acquire()
        check_batch_replies(line.call_many(batch(key)))
        if busy:
            line._lock.release()
    assert line.call(("GET", key)) == b"7"  # the connection is in step after an error reply
    line.close()
    client.close()


async def test_several_calls_share_one_write_and_errors_stay_in_their_place(redis_url: str) -> None:
    """``call_many`` on the held connection and through redis-py's pipeline (the line busy) answer alike."""
    client = async_redis_from_url(redis_url)
    line = AsyncDirectLine(client)
    key = f"k-{uuid.uuid4().hex}"
    for busy in (False, True):
        await client.delete(key)
        line._busy = busy
        check_batch_replies(await line.call_many(batch(key)))
    line._busy = False
    assert await line.call(("GET", key)) == b"7"  # the connection is in step after an error reply
    await line.aclose()
    await client.aclose()


async def test_closing_the_line_during_a_call_gives_the_connection_back_after_it(real_redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(real_redis_url)
    line = AsyncDirectLine(client)
    key = f"k-{uuid.uuid4().hex}"
    call = asyncio.ensure_future(line.call(("BLPOP", key, "0.3")))  # in flight for 0.3 s
    await asyncio.sleep(0.05)
    await line.aclose()
    # meanwhile the pool's other connections serve the app: never the one still waiting for its reply
    assert await client.set(key + "x", "1")
    assert await client.get(key + "x") == b"1"
    assert await call is None  # the call in flight got its own reply
    assert line._conn is None  # and gave the connection back to the pool when it ended
    assert await line.call(("GET", key + "x")) == b"1"  # after close: through the pool
    await client.aclose()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_while_another_thread_is_in_a_call_leaves_the_child_a_usable_line(real_redis_url: str) -> None:
    client = redis.Redis.from_url(real_redis_url)
    line = DirectLine(client)
    key = f"k-{uuid.uuid4().hex}"
    client.set(key, "1")
    busy = threading.Thread(target=line.call, args=(("BLPOP", key + "list", "0.5"),))
    busy.start()
    time.sleep(0.1)  # the thread holds the line's lock
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(5)  # a child stuck on the inherited lock dies instead of hanging the test
            ok = line.call(("GET", key)) == b"1" and line._conn is not None
            line.close()
            code = 0 if ok else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    busy.join()
    assert os.waitstatus_to_exitcode(status) == 0
    line.close()
    client.close()


def packed(key: str, n: int) -> PackedCommand:
    args = ["INCRBY", key]
    return PackedCommand([*args, n], resp_head(args, 3) + resp_bulk(n))


def test_resp_helpers_encode_as_redis_py_does() -> None:
    connection = redis.Connection()
    for args in (["XADD", "s:{é}", "MAXLEN", "~", 1000, "*", "e", b"\x00\xff body"], ["SET", "k", 1.5]):
        ours = resp_head(args[:-1], len(args)) + resp_bulk(args[-1])
        assert ours == b"".join(connection.pack_command(*args))
    with pytest.raises(ValueError, match="total"):
        resp_head(["GET", "k"], 1)
    with pytest.raises(TypeError, match="bool"):
        resp_bulk(True)


def test_a_script_call_is_packed_as_redis_py_packs_it() -> None:
    from llmproxy.core import Script

    command = Script("return 1").command(["k:{é}", b"k2"], [1, 2.5, "text", b"\x00\xff"])
    assert type(command) is PackedCommand
    assert command[:3] == ["EVALSHA", Script("return 1").sha, 2]
    assert command.packed == b"".join(redis.Connection().pack_command(*command))


def test_packed_commands_go_as_encoded_beside_others_and_through_a_pipeline(redis_url: str) -> None:
    client = redis_from_url(redis_url)
    line = DirectLine(client)
    key = f"k-{uuid.uuid4().hex}"
    for busy in (False, True):  # the held connection, then redis-py's pipeline (the argument list)
        client.delete(key)
        if busy:
            line._lock.acquire()
        replies = line.call_many([packed(key, 2), ("INCR", key), packed(key, 10), ("GET", key)])
        assert replies == [2, 3, 13, b"13"]
        assert line.call(packed(key, 1)) == 14
        if busy:
            line._lock.release()
    line.close()
    client.close()


async def test_packed_commands_go_as_encoded_on_an_asyncio_line(redis_url: str) -> None:
    client = async_redis_from_url(redis_url)
    line = AsyncDirectLine(client)
    key = f"k-{uuid.uuid4().hex}"
    for busy in (False, True):
        await client.delete(key)
        line._busy = busy
        assert await line.call_many([packed(key, 2), ("INCR", key), packed(key, 10)]) == [2, 3, 13]
        assert await line.call(packed(key, 1)) == 14
    line._busy = False
    await line.aclose()
    await client.aclose()


async def test_a_batch_s_replies_share_one_deadline_and_a_late_one_times_out(real_redis_url: str) -> None:
    """The asyncio line reads a batch's replies under one deadline, the socket timeout: a batch whose reply
    comes too late fails as redis-py's TimeoutError, and the line is usable again afterwards."""
    client = redis.asyncio.Redis.from_url(real_redis_url, socket_timeout=0.2)
    line = AsyncDirectLine(client)
    key = f"k-{uuid.uuid4().hex}"
    started = time.monotonic()
    with pytest.raises(redis.exceptions.TimeoutError):
        await line.call_many([("INCR", key), ("BLPOP", key + ":empty", "1"), ("INCR", key)])
    assert time.monotonic() - started < 0.9  # the deadline, not the server's 1 s
    assert await line.call_many([("INCR", key), ("GET", key)]) in ([2, b"2"], [3, b"3"])
    await line.aclose()
    await client.aclose()


async def test_an_asyncio_line_writes_itself_and_fails_and_recovers_as_redis_py_does(
    real_redis_url: str,
) -> None:
    """The asyncio line writes to the connection's transport itself (not through redis-py's per-write
    ``asyncio.wait_for``). A connection the server dropped fails the call with redis-py's ConnectionError
    (after the client's retries), and once the server is back the next call reconnects; a connection class
    with its own ``send_packed_command`` gets every write through it."""
    from llmproxy.core.testing import TcpProxy, url_through

    with TcpProxy(urlsplit(real_redis_url).port or 6379) as proxy:
        url = url_through(real_redis_url, proxy.host, proxy.port)
        client = redis.asyncio.Redis.from_url(url, socket_timeout=1, retry_on_error=[])
        line = AsyncDirectLine(client)
        key = f"k-{uuid.uuid4().hex}"
        assert await line.call(("INCR", key)) == 1
        proxy.cut()

        async def calls() -> None:
            for _ in range(3):  # the first write may still reach the kernel's buffer; the read then fails
                await line.call(("INCR", key))

        with pytest.raises((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            await calls()
        proxy.restore()
        assert await line.call(("GET", key)) in (b"1", b"2", b"3", b"4")
        await line.aclose()
        await client.aclose()

    writes: list[int] = []

    class Counting(redis.asyncio.Connection):
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            writes.append(1)
            await super().send_packed_command(command, check_health)

    client = redis.asyncio.Redis(
        connection_pool=redis.asyncio.ConnectionPool.from_url(real_redis_url, connection_class=Counting)
    )
    line = AsyncDirectLine(client)
    await line.call(("PING",))
    before = len(writes)
    await line.call_many([("PING",), ("PING",)])
    await line.call(("PING",))
    assert len(writes) - before == 2
    await line.aclose()
    await client.aclose()
