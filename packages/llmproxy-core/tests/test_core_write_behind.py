"""The write-behind: queued writes leave together, with the next call or within a few ms; bounded; counted."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from llmproxy.core import (
    AsyncWriteBehind,
    Script,
    WriteBehind,
    WriteBehindFull,
    async_redis_from_url,
    redis_from_url,
)

INCR_BY = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")


class Counting:
    """Counts the round trips a client's connections make (a write of packed commands is one)."""

    def __init__(self) -> None:
        self.writes = 0


def count_writes(client: Any) -> Counting:
    counting = Counting()
    pool = client.connection_pool
    original = pool.connection_class.send_packed_command

    def send_packed_command(conn: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        counting.writes += 1
        return original(conn, command, *args, **kwargs)

    pool.connection_class = type("CountingConnection", (pool.connection_class,), {})
    pool.connection_class.send_packed_command = send_packed_command
    return counting


@pytest.fixture
def sync_client(redis_url: str) -> Iterator[Any]:
    client = redis_from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
async def async_client(redis_url: str) -> AsyncIterator[Any]:
    client = async_redis_from_url(redis_url)
    yield client
    await client.aclose()


# -- asyncio -----------------------------------------------------------------------------------------------


async def test_an_enqueued_write_is_sent_within_the_delay(async_client: Any) -> None:
    wb = AsyncWriteBehind(async_client, delay=0.005)
    assert wb.enqueue(["SET", "k", "v"])
    assert await async_client.get("k") is None  # not yet: it waits for company
    await asyncio.sleep(0.05)
    assert await async_client.get("k") == b"v"
    assert (wb.stats.enqueued, wb.stats.sent, wb.stats.pipelines) == (1, 1, 1)
    await wb.aclose()


async def test_queued_writes_leave_with_the_next_call_in_one_round_trip(real_redis_url: str) -> None:
    client = async_redis_from_url(real_redis_url, max_connections=32)
    counting = count_writes(client)
    wb = AsyncWriteBehind(client, delay=0.5)  # long enough that only the call can take them
    await wb.call(["PING"])  # the held connection is taken and connected
    before = counting.writes
    for i in range(5):
        wb.enqueue(["HINCRBY", "h", f"f{i}", i + 1])
    assert await wb.call(["HGETALL", "h"]) == {
        b"f0": b"1",
        b"f1": b"2",
        b"f2": b"3",
        b"f3": b"4",
        b"f4": b"5",
    }
    assert counting.writes - before == 1
    assert wb.pending == 0
    await wb.aclose()
    await client.aclose()


async def test_a_submitted_write_answers_with_its_reply(async_client: Any) -> None:
    wb = AsyncWriteBehind(async_client)
    replies = await asyncio.gather(*(wb.submit(["INCRBY", "n", 2]) for _ in range(10)))
    assert sorted(replies) == list(range(2, 21, 2))
    assert wb.stats.pipelines <= 2  # the ten left together (one pipeline, maybe two)
    await wb.aclose()


async def test_a_submitted_write_is_sent_even_if_its_caller_is_cancelled(async_client: Any) -> None:
    wb = AsyncWriteBehind(async_client, delay=0.01)
    task = asyncio.create_task(wb.submit(["SET", "settled", "1"]))
    await asyncio.sleep(0)  # queued
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    assert await async_client.get("settled") == b"1"
    await wb.aclose()


async def test_a_script_unknown_to_the_server_is_loaded_and_the_write_retried(async_client: Any) -> None:
    await async_client.script_flush()
    wb = AsyncWriteBehind(async_client)
    wb.enqueue(INCR_BY.command(["a"], [3]), script=INCR_BY)
    wb.enqueue(INCR_BY.command(["b"], [4]), script=INCR_BY)
    assert await wb.submit(INCR_BY.command(["a"], [1]), script=INCR_BY) == 4
    assert await async_client.get("b") == b"4"
    assert wb.stats.failed == 0
    await wb.aclose()


async def test_an_error_reply_fails_only_its_own_write(async_client: Any) -> None:
    wb = AsyncWriteBehind(async_client, delay=0.5)
    await async_client.set("text", "abc")
    wb.enqueue(["INCR", "text"])  # WRONGTYPE-ish: not an integer
    wb.enqueue(["SET", "fine", "1"])
    with pytest.raises(Exception, match="not an integer"):
        await wb.call(["INCR", "text"])
    assert await async_client.get("fine") == b"1"
    assert wb.stats.failed == 1
    await wb.aclose()


async def test_a_full_queue_drops_and_counts_without_blocking(async_client: Any) -> None:
    wb = AsyncWriteBehind(async_client, max_queue=3, delay=0.5)
    results = [wb.enqueue(["INCR", "x"]) for _ in range(5)]
    assert results == [True, True, True, False, False]
    assert wb.stats.dropped == 2
    with pytest.raises(WriteBehindFull):
        await wb.submit(["INCR", "x"])
    await wb.flush()
    assert await async_client.get("x") == b"3"
    await wb.aclose()


async def test_closing_sends_what_is_queued_and_later_writes_are_dropped(async_client: Any) -> None:
    wb = AsyncWriteBehind(async_client, delay=1.0)
    for _ in range(7):
        wb.enqueue(["INCR", "closing"])
    await wb.aclose()
    assert await async_client.get("closing") == b"7"
    assert not wb.enqueue(["INCR", "closing"])
    assert wb.stats.dropped == 1


async def test_writes_queued_while_redis_is_unreachable_are_counted_as_failed(proxied_backend: Any) -> None:
    from llmproxy.core import fail_fast_redis_options

    url = proxied_backend.redis_url
    client = async_redis_from_url(url, **fail_fast_redis_options(url))
    wb = AsyncWriteBehind(client, delay=0.001)
    await wb.call(["PING"])
    proxied_backend.redis_proxy.cut()
    started = time.monotonic()
    for _ in range(20):
        assert wb.enqueue(["INCR", "lost"])  # never blocks, never raises
    assert time.monotonic() - started < 0.05
    await asyncio.sleep(1.5)
    assert wb.stats.failed == 20
    proxied_backend.redis_proxy.restore()
    wb.enqueue(["INCR", "after"])
    await wb.flush()
    await asyncio.sleep(0.01)
    assert await wb.call(["GET", "after"]) == b"1"
    await wb.aclose()
    await client.aclose()


def test_an_enqueue_outside_an_event_loop_is_dropped_and_counted(redis_url: str) -> None:
    client = async_redis_from_url(redis_url)
    wb = AsyncWriteBehind(client)
    assert not wb.enqueue(["SET", "k", "v"])
    assert wb.stats.dropped == 1


async def test_one_write_behind_is_shared_per_client(async_client: Any) -> None:
    assert AsyncWriteBehind.for_client(async_client) is AsyncWriteBehind.for_client(async_client)
    other = async_redis_from_url("memory://other-shared")
    assert AsyncWriteBehind.for_client(other) is not AsyncWriteBehind.for_client(async_client)


async def test_a_cluster_client_pipelines_writes_of_many_slots(redis_cluster_url: str) -> None:
    client = async_redis_from_url(redis_cluster_url)
    wb = AsyncWriteBehind(client, delay=0.005)
    for i in range(30):
        wb.enqueue(INCR_BY.command([f"llmproxy:{{tenant-{i}}}:n"], [i]), script=INCR_BY)
    reply = await wb.submit(INCR_BY.command(["llmproxy:{tenant-3}:n"], [100]), script=INCR_BY)
    assert reply == 103
    await wb.flush()
    for i in range(30):
        assert await client.get(f"llmproxy:{{tenant-{i}}}:n") == str(i + (100 if i == 3 else 0)).encode()
    assert wb.stats.failed == 0
    await wb.aclose()
    await client.aclose()


# -- sync --------------------------------------------------------------------------------------------------


def test_sync_enqueued_writes_are_sent_by_the_flusher_thread(sync_client: Any) -> None:
    wb = WriteBehind(sync_client, delay=0.005)
    for _ in range(4):
        assert wb.enqueue(["INCR", "s"])
    deadline = time.monotonic() + 2
    while sync_client.get("s") != b"4" and time.monotonic() < deadline:
        time.sleep(0.005)
    assert sync_client.get("s") == b"4"
    assert wb.stats.pipelines >= 1
    wb.close()


def test_sync_call_takes_queued_writes_along_in_one_round_trip(real_redis_url: str) -> None:
    client = redis_from_url(real_redis_url)
    counting = count_writes(client)
    wb = WriteBehind(client, delay=0.5)
    wb.call(["PING"])
    before = counting.writes
    for i in range(3):
        wb.enqueue(["RPUSH", "order", i])
    assert wb.call(["LRANGE", "order", 0, -1]) == [b"0", b"1", b"2"]
    assert counting.writes - before == 1
    wb.close()
    client.close()


def test_sync_writes_from_many_threads_are_all_sent(sync_client: Any) -> None:
    wb = WriteBehind(sync_client, delay=0.002)

    def work() -> None:
        for _ in range(200):
            wb.enqueue(["INCR", "threads"])
        wb.call(["INCR", "calls"])

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wb.close()
    assert sync_client.get("threads") == b"1600"
    assert sync_client.get("calls") == b"8"
    assert wb.stats.dropped == wb.stats.failed == 0


def test_a_sync_thread_faster_than_redis_is_slowed_not_dropped(sync_client: Any) -> None:
    wb = WriteBehind(sync_client, delay=1.0, max_queue=100, max_batch=50)  # the flusher thread waits: the
    for _ in range(1_000):  # producer alone meets the full queue, ten times over
        assert wb.enqueue(["INCR", "burst"])
    wb.flush()
    assert sync_client.get("burst") == b"1000"
    assert wb.stats.dropped == 0
    assert wb.stats.sent == 1_000
    wb.close()


def test_sync_close_flushes_and_refuses_later_writes(sync_client: Any) -> None:
    wb = WriteBehind(sync_client, delay=1.0)
    for _ in range(5):
        wb.enqueue(["INCR", "c"])
    wb.close()
    assert sync_client.get("c") == b"5"
    assert not wb.enqueue(["INCR", "c"])


def test_sync_flush_waits_for_the_batch_the_flusher_thread_has_in_flight(real_redis_url: str) -> None:
    client = redis_from_url(real_redis_url)
    wb = WriteBehind(client, delay=0.001)
    wb.call(["PING"])
    # The flusher thread takes both at once; the BLPOP holds that batch on the server for half a second.
    wb.enqueue(["BLPOP", "llmproxy:test:absent", "0.5"])
    wb.enqueue(["SET", "llmproxy:test:after", "1"])
    deadline = time.monotonic() + 2
    while wb.pending and time.monotonic() < deadline:
        time.sleep(0.001)
    assert not wb.pending  # taken by the flusher thread, not yet sent
    assert client.get("llmproxy:test:after") is None
    wb.flush(timeout=5.0)
    assert client.get("llmproxy:test:after") == b"1"
    assert wb.stats.sent == 2
    wb.close()
    client.close()


def test_sync_flush_gives_up_at_its_timeout(real_redis_url: str) -> None:
    client = redis_from_url(real_redis_url)
    wb = WriteBehind(client, delay=0.001)
    wb.call(["PING"])
    wb.enqueue(["BLPOP", "llmproxy:test:absent", "1"])
    while wb.pending:
        time.sleep(0.001)
    start = time.monotonic()
    wb.flush(timeout=0.1)
    assert time.monotonic() - start < 0.9  # returned at its timeout, not when the batch left
    wb.close()
    client.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_sends_its_own_writes_not_the_parents(real_redis_url: str) -> None:
    client = redis_from_url(real_redis_url)
    wb = WriteBehind(client, delay=0.5)
    wb.call(["PING"])  # the parent holds a connection
    wb.enqueue(["INCR", "parent"])  # queued in the parent, not yet sent
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            wb.enqueue(["INCR", "child"])
            wb.call(["INCR", "child"])
            code = 0 if wb.pending == 0 else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    wb.close()
    assert client.get("child") == b"2"
    assert client.get("parent") == b"1"  # sent once, by the parent
    client.close()


async def test_a_closed_shared_write_behind_is_replaced_for_the_next_user(async_client: Any) -> None:
    first = AsyncWriteBehind.for_client(async_client)
    await first.aclose()
    second = AsyncWriteBehind.for_client(async_client)
    assert second is not first
    assert await second.submit(["SET", "after-close", "1"])  # the closed one would refuse it
    assert await async_client.get("after-close") == b"1"
    await second.aclose()


def test_a_sync_call_with_nothing_queued_goes_alone_on_the_held_line(real_redis_url: str) -> None:
    client = redis_from_url(real_redis_url)
    counting = count_writes(client)
    wb = WriteBehind(client, delay=0.5)
    wb.call(["PING"])  # the held connection is taken and connected
    before = counting.writes
    assert wb.call(["SET", "alone", "1"]) == b"OK"
    assert counting.writes - before == 1
    assert wb.stats.pipelines == 0  # not counted as a pipeline of queued writes
    wb.close()
    client.close()
