"""The same suite on every transport: embedded Redis Streams, a real Redis, a real RabbitMQ."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from llmproxy.audit import AuditStore, dead_letters
from llmproxy.core import RequestContext, use_context
from llmproxy.core.testing import TcpProxy, free_port, url_through

from .conftest import Stack
from .helpers import consumer, publisher, stored_ids, wait_until


def drain_until(c, predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c.drain(wait=0.05)
        if predicate():
            return True
    return predicate()


def test_published_events_are_stored_once_with_the_request_context(stack: Stack, tenant: uuid.UUID) -> None:
    pub = publisher(stack)
    ctx = RequestContext(tenant_id=str(tenant), user_id="alice", client_ip="10.1.2.3", user_agent="curl/8")
    with use_context(ctx):
        for i in range(40):
            assert pub.publish("flag.update", "flag", f"f{i}", {"on": False}, {"on": True})
    pub.close()
    c = consumer(stack)
    assert drain_until(c, lambda: c.stats.stored == 40)
    stored = AuditStore(c.engine).all(tenant)
    assert sorted(e.entity_id or "" for e in stored) == sorted(f"f{i}" for i in range(40))
    first = stored[0]
    assert (first.user_id, first.actor_type, first.ip_address, first.user_agent) == (
        "alice", "user", "10.1.2.3", "curl/8",
    )  # fmt: skip
    assert first.request_id == ctx.request_id
    assert c.stats.duplicates == 0
    c.stop()


def test_a_poison_event_is_dead_lettered_after_exactly_n_deliveries_while_the_rest_flow(
    stack: Stack, tenant: uuid.UUID
) -> None:
    stack = stack.with_options(max_deliveries=3, claim_idle=0.2)
    pub = publisher(stack)
    pub.publish("before", "thing", tenant_id=tenant)
    pub.publish_event_bytes(b'{"not": "an audit event"}')
    for i in range(20):
        pub.publish("after", "thing", str(i), tenant_id=tenant)
    pub.close()
    c = consumer(stack)
    assert drain_until(c, lambda: c.stats.dead_lettered == 1)
    assert c.stats.failed_deliveries == 3
    assert c.stats.stored == 21
    dead = dead_letters(stack.transport_url, stack.options)
    assert len(dead) == 1
    assert dead[0]["deliveries"] == 3
    assert "not a valid audit event" in str(dead[0]["reason"])
    assert dead[0]["body"] == b'{"not": "an audit event"}'
    c.stop()


def test_an_event_the_database_refuses_is_dead_lettered_while_the_rest_flow(
    stack: Stack, tenant: uuid.UUID
) -> None:
    """PostgreSQL stores no NUL character in text or jsonb: such an event is valid, but the database refuses
    it. The batch is stored event by event, and the refused ones are dead-lettered after their N-th delivery
    (the error is PostgreSQL's own, raised through the store's COPY). SQLite stores them."""
    stack = stack.with_options(max_deliveries=2, claim_idle=0.2)
    pub = publisher(stack)
    for i in range(5):
        pub.publish("before", "thing", str(i), tenant_id=tenant)
    pub.publish("nul.text", "thing", user_agent="agent\x00/1", tenant_id=tenant)
    pub.publish("nul.json", "thing", new_values={"note": "a\x00b"}, tenant_id=tenant)
    for i in range(5):
        pub.publish("after", "thing", str(i), tenant_id=tenant)
    pub.close()
    c = consumer(stack)
    if stack.kind == "embedded":
        assert drain_until(c, lambda: c.stats.stored == 12)
        assert c.stats.failed_deliveries == 0
    else:
        assert drain_until(c, lambda: c.stats.dead_lettered == 2)
        assert c.stats.stored == 10
        assert c.stats.failed_deliveries == 4  # two events, two deliveries each
        dead = dead_letters(stack.transport_url, stack.options)
        assert sorted(d["deliveries"] for d in dead) == [2, 2]
        assert all("the database refused it" in str(d["reason"]) for d in dead)
    assert len(stored_ids(stack.database_url, tenant)) == c.stats.stored
    c.stop()


def test_events_a_stopped_consumer_held_are_stored_by_another(stack: Stack, tenant: uuid.UUID) -> None:
    stack = stack.with_options(claim_idle=0.2)
    pub = publisher(stack)
    for i in range(10):
        pub.publish("x.y", "thing", str(i), tenant_id=tenant)
    pub.close()
    first = consumer(stack)
    first.transport.setup()
    taken = first.transport.receive(10, 2.0)
    assert len(taken) == 10
    first.transport.close()  # gone without acknowledging
    second = consumer(stack)
    assert drain_until(second, lambda: second.stats.stored == 10)
    assert len(stored_ids(stack.database_url, tenant)) == 10
    second.stop()


def test_an_event_whose_last_delivery_crashed_its_consumer_is_dead_lettered(
    stack: Stack, tenant: uuid.UUID
) -> None:
    stack = stack.with_options(max_deliveries=2, claim_idle=0.2)
    pub = publisher(stack)
    pub.publish("x.y", "thing", tenant_id=tenant)
    pub.close()
    for _ in range(2):  # two deliveries, each to a consumer that dies holding it
        crashed = consumer(stack)
        crashed.transport.setup()
        assert wait_until(lambda c=crashed: len(c.transport.receive(1, 0.3)) == 1, timeout=10)  # type: ignore[misc]
        crashed.transport.close()
    survivor = consumer(stack)
    assert wait_until(
        lambda: (survivor.drain(wait=0.05), len(dead_letters(stack.transport_url, stack.options)))[1] == 1
    )
    assert stored_ids(stack.database_url, tenant) == []
    survivor.stop()


@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
def test_a_publisher_whose_transport_is_down_never_blocks_and_counts_what_it_loses(
    kind: str, request: pytest.FixtureRequest
) -> None:
    from llmproxy.audit import AuditPublisher

    from .conftest import unique_options

    port = free_port()  # nothing listens there
    url = f"redis://127.0.0.1:{port}/0" if kind == "redis" else f"amqp://guest:guest@127.0.0.1:{port}/%2F"
    pub = AuditPublisher.from_url(url, unique_options(buffer_size=500))
    pub.publish("warm", "up")  # first-call costs (imports) are not the network
    took = []
    for i in range(5000):
        started = time.perf_counter()
        pub.publish("x.y", "thing", str(i))
        took.append(time.perf_counter() - started)
    pub.close(timeout=0.5)
    stats = pub.sink.stats
    took.sort()
    # A publish that waited on the network would take the connect timeout (0.5 s and more) every time.
    assert took[int(len(took) * 0.99)] < 0.002, f"p99 {took[int(len(took) * 0.99)] * 1000:.2f} ms"
    assert took[-1] < 0.25, f"a publish took {took[-1] * 1000:.1f} ms"
    assert stats.delivered == 0
    assert stats.dropped + stats.lost == 5001
    assert pub.stats.dropped == stats.dropped
    assert pub.stats.dropped > 0 or stats.lost > 0


@pytest.fixture(params=["redis", "rabbitmq"])
def real_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The stacks with a real PostgreSQL (the database can be cut)."""
    from .conftest import delete_amqp_topology, unique_options

    options = unique_options(claim_idle=1.0, backoff_max=0.2)
    database = request.getfixturevalue("real_database_url")
    if request.param == "redis":
        yield Stack("redis", request.getfixturevalue("real_redis_url"), database, options)
        return
    url = request.getfixturevalue("amqp_url")
    yield Stack("rabbitmq", url, database, options)
    delete_amqp_topology(url, options)


def test_with_the_database_down_nothing_is_acknowledged_and_all_is_stored_once_it_returns(
    real_stack: Stack, tenant: uuid.UUID
) -> None:
    import sqlalchemy as sa

    port = sa.make_url(real_stack.database_url).port or 5432
    proxy = TcpProxy(port)
    try:
        c = consumer(real_stack, url_through(real_stack.database_url, proxy.host, proxy.port))
        c.start()
        proxy.cut()
        pub = publisher(real_stack)
        for i in range(30):
            pub.publish("x.y", "thing", str(i), tenant_id=tenant)
        pub.flush()
        assert wait_until(lambda: c.stats.database_errors >= 3)
        assert c.stats.stored == 0
        assert stored_ids(real_stack.database_url, tenant) == []
        proxy.restore()
        assert wait_until(lambda: len(stored_ids(real_stack.database_url, tenant)) == 30)
        c.stop()
        pub.close()
        assert c.stats.dead_lettered == 0
        assert len(set(stored_ids(real_stack.database_url, tenant))) == 30
        assert dead_letters(real_stack.transport_url, real_stack.options) == []
    finally:
        proxy.close()


def test_with_the_database_down_the_batch_received_ahead_keeps_its_lease_too(
    real_redis_url: str, real_database_url: str, tenant: uuid.UUID
) -> None:
    """An overlapped run whose store finds the database down has the next batch in hand as well: both keep
    their leases while it retries, so a second consumer reclaims neither (each event is delivered once),
    and all are stored once the database returns."""
    import sqlalchemy as sa

    from llmproxy.core import redis_from_url

    from .conftest import unique_options

    stack = Stack(
        "redis",
        real_redis_url,
        real_database_url,
        unique_options(claim_idle=0.6, backoff_max=0.1, batch_size=10, poll=0.05),
    )
    port = sa.make_url(real_database_url).port or 5432
    proxy = TcpProxy(port)
    pub = publisher(stack)
    client = redis_from_url(real_redis_url)
    try:
        first = consumer(stack, url_through(real_database_url, proxy.host, proxy.port))
        first.maintain()  # (its partitions exist before the cut)
        proxy.cut()
        for i in range(20):  # two batches: the first one stored (and refused), the second received ahead
            pub.publish("x.y", "thing", str(i), tenant_id=tenant)
        pub.flush()
        first.start()
        assert wait_until(lambda: first.stats.database_errors >= 2 and first.stats.received == 20)
        second = consumer(stack, url_through(real_database_url, proxy.host, proxy.port))
        second.start()  # it reclaims what stays idle for claim_idle (0.6 s)
        time.sleep(3.0)
        pending = client.xpending_range(stack.options.stream, stack.options.group, "-", "+", 100)
        assert len(pending) == 20
        assert {p["times_delivered"] for p in pending} == {1}, pending
        assert second.stats.received == 0
        proxy.restore()
        assert wait_until(lambda: len(stored_ids(real_database_url, tenant)) == 20)
        first.stop()
        second.stop()
        assert len(set(stored_ids(real_database_url, tenant))) == 20
        assert first.stats.dead_lettered == second.stats.dead_lettered == 0
    finally:
        pub.close()
        client.close()
        proxy.close()


def test_a_drain_over_many_batches_stores_each_event_once_in_chain_order(stack: Stack) -> None:
    """Many small batches of three tenants, each prepared (rows, hash parts) before its transaction, make
    three unbroken chains with every event once."""
    from llmproxy.audit import verify_chain
    from llmproxy.core import create_engine

    stack = stack.with_options(batch_size=25)
    tenants = [uuid.uuid4() for _ in range(3)]
    pub = publisher(stack)
    for i in range(300):
        pub.publish("x.y", "thing", str(i), tenant_id=tenants[i % 3])
    pub.flush()
    c = consumer(stack)
    assert c.drain(wait=0.05) == 300
    assert c.stats.stored == 300
    assert c.stats.batches >= 12
    c.stop()
    pub.close()
    engine = create_engine(stack.database_url)
    try:
        for tenant in tenants:
            assert len(set(stored_ids(stack.database_url, tenant))) == 100
            with engine.connect() as conn:
                report = verify_chain(conn, tenant)
            assert report.ok, report
            assert report.checked == 100
    finally:
        engine.dispose()


class ThreadRecordingTransport:
    """The stack's real transport, recording which thread makes each call, and how many receives overlapped
    a store's transaction (open when the receive began or ended, or opened during it: ``store_opened`` and
    ``stores_open``, kept by the engine's events)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.threads: set[int] = set()
        self.stores_open = 0
        self.receiving = False
        self.opened_while_receiving = False
        self.receives_while_storing = 0
        self.helper_daemon: set[bool] = set()  # whether the store's thread was a daemon, as seen

    def store_opened(self) -> None:
        self.stores_open += 1
        if self.receiving:
            self.opened_while_receiving = True

    def _record(self) -> None:
        self.threads.add(threading.get_ident())

    def setup(self) -> None:
        self._record()
        self.inner.setup()

    def receive(self, count: int, wait: float) -> Any:
        self._record()
        self.helper_daemon |= {t.daemon for t in threading.enumerate() if t.name == "llmproxy-audit-store"}
        overlapped = self.stores_open > 0
        self.receiving, self.opened_while_receiving = True, False
        try:
            return self.inner.receive(count, wait)
        finally:
            self.receiving = False
            if overlapped or self.opened_while_receiving or self.stores_open:
                self.receives_while_storing += 1

    def ack(self, items: Any) -> None:
        self._record()
        self.inner.ack(items)

    def release(self, items: Any) -> None:
        self._record()
        self.inner.release(items)

    def hold(self, items: Any) -> None:
        self._record()
        self.inner.hold(items)

    def dead_letter(self, item: Any, reason: str) -> None:
        self._record()
        self.inner.dead_letter(item, reason)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "one-after-the-other"])
def test_run_stores_each_batch_while_it_receives_the_next_and_keeps_the_transport_on_its_own_thread(
    stack: Stack, overlap: bool
) -> None:
    """``run`` with ``overlap``: the transactions run on a helper thread while the consumer's thread receives
    the next batch (a real broker's receive waits on a socket); every transport call (receive, ack) stays on
    the consumer's thread; the store's thread is a daemon (an app's exit never waits for it); 400 events in
    16 batches of three tenants are each stored once, none left pending, and the chains verify. Without, and
    on SQLite (a connection per thread): all on one thread."""
    import sqlalchemy as sa

    from llmproxy.audit import AuditConsumer, transport_from_url, verify_chain
    from llmproxy.core import create_engine

    stack = stack.with_options(batch_size=25, poll=0.05, overlap=overlap)
    tenants = [uuid.uuid4() for _ in range(3)]
    pub = publisher(stack)
    for i in range(400):
        pub.publish("x.y", "thing", str(i), tenant_id=tenants[i % 3])
    pub.close()
    transport = ThreadRecordingTransport(transport_from_url(stack.transport_url, stack.options))
    engine = create_engine(stack.database_url)
    store_threads: set[int] = set()

    def opened(_conn: Any) -> None:
        store_threads.add(threading.get_ident())
        transport.store_opened()

    def closed(_conn: Any) -> None:
        transport.stores_open -= 1

    sa.event.listen(engine, "begin", opened)
    sa.event.listen(engine, "commit", closed)
    sa.event.listen(engine, "rollback", closed)
    c = AuditConsumer(transport, engine, stack.options)  # type: ignore[arg-type]
    c.run(max_idle_rounds=3)
    assert c.stats.stored == 400
    assert c.stats.duplicates == 0
    assert transport.threads == {threading.get_ident()}
    if overlap and stack.kind != "embedded":
        assert store_threads - {threading.get_ident()}, "no transaction ran on the helper thread"
        assert transport.receives_while_storing >= 1, transport.receives_while_storing
        assert transport.helper_daemon == {True}
    else:
        assert store_threads == {threading.get_ident()}
        assert transport.receives_while_storing == 0
    if stack.kind != "rabbitmq":  # every delivery acknowledged: none pending in the group
        from llmproxy.core import redis_from_url

        client = redis_from_url(stack.transport_url)
        assert client.xpending(stack.options.stream, stack.options.group)["pending"] == 0
        client.close()
    c.stop()
    try:
        for k, tenant in enumerate(tenants):
            ids = stored_ids(stack.database_url, tenant)
            published = len(range(k, 400, 3))
            assert len(ids) == len(set(ids)) == published
            with engine.connect() as conn:
                report = verify_chain(conn, tenant)
            assert report.ok, report
            assert report.checked == published
    finally:
        engine.dispose()


def test_an_overlapped_run_dead_letters_what_the_database_refuses_while_the_rest_flow(
    stack: Stack, tenant: uuid.UUID
) -> None:
    """The refused events of a batch stored on the helper thread are failed, and dead-lettered on their N-th
    delivery, by the consumer's thread; the rest of the batch and the batches after it are stored."""
    if stack.kind == "embedded":
        pytest.skip("SQLite stores NUL characters: nothing is refused")
    stack = stack.with_options(max_deliveries=2, claim_idle=0.2, batch_size=4, poll=0.05)
    pub = publisher(stack)
    for i in range(6):
        pub.publish("before", "thing", str(i), tenant_id=tenant)
    pub.publish("nul.text", "thing", user_agent="agent\x00/1", tenant_id=tenant)
    for i in range(9):
        pub.publish("after", "thing", str(i), tenant_id=tenant)
    pub.close()
    from llmproxy.audit import AuditConsumer, transport_from_url
    from llmproxy.core import create_engine

    transport = ThreadRecordingTransport(transport_from_url(stack.transport_url, stack.options))
    c = AuditConsumer(transport, create_engine(stack.database_url), stack.options)  # type: ignore[arg-type]
    assert c.options.overlap
    c.start()
    assert c._thread is not None
    consumer_thread = c._thread.ident
    try:
        assert wait_until(lambda: c.stats.dead_lettered == 1 and c.stats.stored == 15)
    finally:
        c.stop()
    assert transport.threads == {consumer_thread}  # the release and the dead-lettering included
    assert c.stats.failed_deliveries == 2
    dead = dead_letters(stack.transport_url, stack.options)
    assert [d["deliveries"] for d in dead] == [2]
    assert "the database refused it" in str(dead[0]["reason"])
    assert len(set(stored_ids(stack.database_url, tenant))) == 15


def test_run_on_an_in_memory_sqlite_database_stores_on_its_own_thread(
    embedded_redis_url: str, tenant: uuid.UUID
) -> None:
    """SQLite's ``:memory:`` is a database per thread (SQLAlchemy's SingletonThreadPool): a helper thread
    would find none of the tables, so ``run`` stores one batch after the other there, without errors."""
    from llmproxy.audit import AuditConsumer, AuditStore, transport_from_url
    from llmproxy.core import create_engine, upgrade

    from .conftest import unique_options

    engine = create_engine("sqlite://")
    upgrade(engine)
    stack = Stack("embedded", embedded_redis_url, "sqlite://", unique_options(batch_size=10, poll=0.05))
    pub = publisher(stack)
    for i in range(30):
        pub.publish("x.y", "thing", str(i), tenant_id=tenant)
    pub.close()
    c = AuditConsumer(transport_from_url(stack.transport_url, stack.options), engine, stack.options)
    assert c.options.overlap
    c.run(max_idle_rounds=2)
    assert c.stats.stored == 30
    assert c.stats.database_errors == 0
    assert len(AuditStore(engine).all(tenant)) == 30
    c.stop()
