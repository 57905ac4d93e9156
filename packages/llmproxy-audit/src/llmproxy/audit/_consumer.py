"""``AuditConsumer``: transport → PostgreSQL (or SQLite), at least once in, exactly once stored.

A round: receive a batch; decode it (an undecodable delivery has failed); store the rest in one transaction;
acknowledge only after the commit. A database that is down or refuses the connection: nothing is acknowledged;
the batch is kept (its lease renewed, so no other consumer takes it) and retried with exponential backoff.
A batch the database rejects for its data is stored event by event to find the culprit(s). A delivery that
failed goes back for redelivery, and on its ``max_deliveries``-th failed delivery to the dead-letter stream or
queue with its reason. Runs in the calling thread (``run``), in a thread of its own (``start``/``stop``),
or as
the ``llmproxy-audit consume`` process.

``run`` overlaps the two halves of a round (``AuditOptions.overlap``): while a helper thread stores batch N
(its transaction waits on PostgreSQL for most of its time, the GIL released), the consumer's thread receives
and prepares batch N+1. Only the database is touched on the helper thread; what the store decided for the
transport (acknowledge these, this one failed) is done afterwards on the consumer's thread, so a transport is
only ever used by one thread (pika's connections are not thread-safe), and still only after the commit.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import pydantic
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from llmproxy.core import SYSTEM_CLOCK, Clock

from ._models import AuditEvent, decode_event
from ._options import AuditOptions
from ._partitions import Month, add_months, create_partitions, month_of
from ._store import CheckpointPolicy, PreparedBatch, prepare_batch, store_batch, store_prepared
from ._transport import ConsumerTransport, Delivery
from ._verify import apply_retention

logger = logging.getLogger("llmproxy.audit.consumer")


@dataclass(frozen=True, slots=True)
class _Batch:
    """A received batch: how many deliveries, the decoded ones, their rows (None: one cannot be hashed)."""

    received: int
    good: list[tuple[Delivery, AuditEvent]]
    prepared: PreparedBatch | None
    #: the positions in ``good`` settled one by one already (an attempt interrupted by a database outage
    #: goes on from there: nothing is acknowledged twice, nor failed twice)
    settled: set[int] = field(default_factory=set)


class _Now:
    """A store's transport actions, done as they are decided (the consumer's own thread)."""

    __slots__ = ("_consumer",)

    def __init__(self, consumer: AuditConsumer) -> None:
        self._consumer = consumer

    def ack(self, items: list[Delivery]) -> None:
        self._consumer.transport.ack(items)

    def failed(self, item: Delivery, reason: str) -> None:
        self._consumer._failed(item, reason)


class _Later:
    """A store's transport actions, recorded on the helper thread and done in order by :meth:`apply`."""

    __slots__ = ("_actions",)

    def __init__(self) -> None:
        self._actions: list[tuple[list[Delivery], str | None]] = []

    def ack(self, items: list[Delivery]) -> None:
        self._actions.append((items, None))

    def failed(self, item: Delivery, reason: str) -> None:
        self._actions.append(([item], reason))

    def apply(self, now: _Now) -> None:
        """Do the recorded actions, in order, as ``now`` does them."""
        actions, self._actions = self._actions, []
        for items, reason in actions:
            if reason is None:
                now.ack(items)
            else:
                now.failed(items[0], reason)


_Settlement = _Now | _Later


class _Helper:
    """One daemon thread running the calls given to :meth:`submit`, one at a time. (Not a
    ``ThreadPoolExecutor``: its threads are joined when the interpreter exits, so a store waiting on a
    paused database would hold up the exit of an app that embeds the consumer.)"""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[tuple[Future[None], Callable[[], None]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="llmproxy-audit-store", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (call := self._calls.get()) is not None:
            future, fn = call
            try:
                fn()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(None)

    def submit(self, fn: Callable[..., None], *args: object) -> Future[None]:
        future: Future[None] = Future()
        self._calls.put((future, lambda: fn(*args)))
        return future

    def close(self) -> None:
        self._calls.put(None)


#: How long an overlapped receive waits for the next batch (seconds): when none is there yet, the round ends
#: (and its acknowledgements go out) instead of waiting a whole ``poll`` for it.
_PEEK = 0.001


@dataclass(slots=True)
class ConsumerStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    failed_deliveries: int = 0
    dead_lettered: int = 0
    database_errors: int = 0
    transport_errors: int = 0
    checkpoints: int = 0
    batches: int = 0

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


def is_transient(exc: BaseException) -> bool:
    """A database failure that says nothing about the events: connection lost, server gone, lock timeout."""
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError) or _deadlock(exc)
    return isinstance(exc, sa.exc.TimeoutError | ConnectionError | OSError)


#: What an event that decoded but cannot be hashed raises (e.g. a structure too deep for the canonical form).
_UNSTORABLE = (ValueError, TypeError, RecursionError)


def _no_partition(exc: sa.exc.DBAPIError) -> bool:
    return "no partition of relation" in str(exc.orig)


def _deadlock(exc: sa.exc.DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlstate", None)
    return code in ("40001", "40P01", "55P03", "57014")


def decode(item: Delivery) -> AuditEvent | str:
    """The event, or why it is not one."""
    try:
        return decode_event(item.body)
    except (pydantic.ValidationError, ValueError) as exc:
        return "not a valid audit event: " + str(exc).replace("\n", " ")[:1000]
    except Exception as exc:  # pragma: no cover - pydantic wraps decoding errors
        return f"undecodable: {exc}"[:1000]


class AuditConsumer:
    """Moves events from ``transport`` into the database behind ``engine``."""

    def __init__(
        self,
        transport: ConsumerTransport,
        engine: Engine,
        options: AuditOptions | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.transport = transport
        self.engine = engine
        self.options = options or AuditOptions()
        self.clock = clock
        self.stats = ConsumerStats()
        self._policy = CheckpointPolicy(
            self.options.signer(),
            self.options.checkpoint_every_events,
            int(self.options.checkpoint_every_seconds * 1000),
        )
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._thread: threading.Thread | None = None
        self._months: set[Month] = set()
        self._next_maintenance = 0.0
        self._set_up = False
        self._now = _Now(self)
        self._ahead: _Batch | None = None  # run(): received while the batch before it was stored

    # -- one round -------------------------------------------------------------------------------------------

    def run_once(self, wait: float | None = None) -> int:
        """Receive and settle one batch; returns how many deliveries it settled (0 when none came)."""
        self._maintain()
        batch = self._take(wait)
        if batch is None:
            return 0
        return self._settle(batch)

    def _take(self, wait: float | None) -> _Batch | None:
        """Receive a batch and make it ready to store (decode, rows, hash parts); undecodable deliveries are
        settled as failed here. Touches the transport and the CPU only, never the database."""
        if not self._set_up:
            self.transport.setup()
            self._set_up = True
        items = self.transport.receive(self.options.batch_size, self.options.poll if wait is None else wait)
        if not items:
            return None
        self.stats.received += len(items)
        good: list[tuple[Delivery, AuditEvent]] = []
        for item in items:
            decoded = decode(item)
            if isinstance(decoded, str):
                self._failed(item, decoded)
            else:
                good.append((item, decoded))
        prepared: PreparedBatch | None = None
        if good:
            try:
                prepared = prepare_batch([e for _, e in good])
            except _UNSTORABLE:
                prepared = None  # one of them cannot be hashed: _settle finds which, event by event
        return _Batch(len(items), good, prepared)

    def _settle(self, batch: _Batch) -> int:
        """Store the batch and acknowledge it: the number of deliveries settled, or 0 when stopping while the
        database is down."""
        if batch.good:
            if batch.prepared is None:
                self._store_one_by_one(batch)
            elif not self._store_with_retry(batch):
                return 0  # stopping while the database is down: nothing acknowledged
        self.stats.batches += 1
        return batch.received

    def _store_with_retry(
        self, batch: _Batch, ahead: _Batch | None = None, *, failed: BaseException | None = None
    ) -> bool:
        """Store ``batch`` until it is stored (True) or the consumer stops (False). While the database is
        down, the leases of its deliveries (and of ``ahead``'s, a batch received meanwhile) are renewed.
        ``failed``: the first attempt was made already and failed so."""
        delay = self.options.backoff_min
        held_at = self.clock.monotonic()
        while True:
            if failed is None:
                try:
                    self._store(batch)
                    return True
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    failed = exc
            self.stats.database_errors += 1
            logger.warning("database unavailable, %d events kept unacknowledged: %s", len(batch.good), failed)
            failed = None
            if self._stop.is_set():
                return False
            self._sleep(delay)
            delay = min(delay * 2, self.options.backoff_max)
            if self.clock.monotonic() - held_at >= self.options.claim_idle / 3:
                held_at = self.clock.monotonic()
                self._renew(batch, ahead)

    def _store(self, batch: _Batch, settle: _Settlement | None = None) -> None:
        """Store a prepared batch in one transaction, or (refused) event by event; ``settle`` is told what to
        acknowledge and what failed (default: done at once)."""
        settle = settle or self._now
        if batch.settled:  # an earlier attempt went event by event: the rest of the batch goes so too
            self._store_one_by_one(batch, settle)
            return
        prepared = batch.prepared
        assert prepared is not None
        self._ensure_months(prepared.months)
        try:
            with self.engine.begin() as conn:
                result = store_prepared(conn, prepared, now_ms=self._now_ms(), policy=self._policy)
        except sa.exc.DBAPIError as exc:
            if is_transient(exc):
                raise
            if _no_partition(exc) and self._months:
                self._months.clear()  # another worker's retention dropped one: look again, then retry
                self._store(batch, settle)
                return
            self._store_one_by_one(batch, settle)
            return
        except _UNSTORABLE:
            self._store_one_by_one(batch, settle)
            return
        settle.ack([item for item, _ in batch.good])
        self.stats.stored += result.inserted
        self.stats.duplicates += result.duplicates
        self.stats.checkpoints += result.checkpoints

    def _store_one_by_one(self, batch: _Batch, settle: _Settlement | None = None) -> None:
        settle = settle or self._now
        for position, (item, event) in enumerate(batch.good):
            if position in batch.settled:
                continue
            try:
                with self.engine.begin() as conn:
                    result = store_batch(conn, [event], now_ms=self._now_ms(), policy=self._policy)
            except sa.exc.DBAPIError as exc:
                if is_transient(exc):
                    raise
                settle.failed(item, "the database refused it: " + str(exc.orig).replace("\n", " ")[:1000])
                batch.settled.add(position)
                continue
            except _UNSTORABLE as exc:
                settle.failed(item, f"cannot be stored: {type(exc).__name__}: {exc}"[:1000])
                batch.settled.add(position)
                continue
            settle.ack([item])
            batch.settled.add(position)
            self.stats.stored += result.inserted
            self.stats.duplicates += result.duplicates

    def _failed(self, item: Delivery, reason: str) -> None:
        self.stats.failed_deliveries += 1
        if item.deliveries >= self.options.max_deliveries:
            self.transport.dead_letter(item, reason)
            self.stats.dead_lettered += 1
            logger.error("event dead-lettered after %d deliveries: %s", item.deliveries, reason)
        else:
            self.transport.release([item])
            logger.warning("delivery %d of an event failed (will be retried): %s", item.deliveries, reason)

    # -- partitions and retention ----------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.clock.now() * 1000)

    def _ensure_months(self, months: set[Month]) -> None:
        missing = months - self._months
        if missing:
            with self.engine.begin() as conn:
                create_partitions(conn, missing)
            self._months |= missing

    def _maintain(self) -> None:
        now = self.clock.monotonic()
        if now < self._next_maintenance:
            return
        self._next_maintenance = now + self.options.maintenance_interval
        try:
            self.maintain()
        except Exception as exc:
            if not is_transient(exc):
                raise
            self._next_maintenance = now + self.options.backoff_max
            logger.warning("partition maintenance postponed: %s", exc)

    def maintain(self) -> tuple[list[Month], list[Month]]:
        """Create the partitions of this month and ``partitions_ahead`` more; apply retention. (created,
        dropped)"""
        created, dropped, wanted = maintain_database(self.engine, self.options, self.clock)
        self._months = (self._months | wanted) - set(dropped)
        return created, dropped

    # -- running ---------------------------------------------------------------------------------------------

    def run(self, *, max_idle_rounds: int | None = None) -> None:
        """Consume until :meth:`stop` (or SIGTERM in the CLI); with ``max_idle_rounds``, until that many
        empty rounds. With ``options.overlap``, each batch is stored on a helper thread while the next one is
        received (see the module's docstring); a batch received ahead is settled before returning, except
        when stopping with the database down (then it is left unacknowledged, as the batch before it). Not on
        SQLite: a connection there is per thread (``:memory:`` is even a database per thread), and an
        embedded transport answers in this thread anyway."""
        overlap = self.options.overlap and self.engine.dialect.name != "sqlite"
        helper = _Helper() if overlap else None
        try:
            self._run(helper, max_idle_rounds)
        finally:
            if helper is not None:
                helper.close()

    def _run(self, helper: _Helper | None, max_idle_rounds: int | None) -> None:
        idle = 0
        delay = self.options.backoff_min
        self._ahead = None
        while self._ahead is not None or not self._stop.is_set():
            try:
                self._maintain()  # (no store is running now: the helper is idle between rounds)
                batch, self._ahead = self._ahead, None
                if batch is None:
                    batch = self._take(None)
                if batch is None:
                    settled = 0
                elif helper is None:
                    settled = self._settle(batch)
                else:
                    settled = self._settle_overlapped(batch, helper)
                    if not settled and self._stop.is_set():
                        return  # the database is down: what was received ahead stays unacknowledged too
                delay = self.options.backoff_min
            except Exception as exc:
                if not (is_transient(exc) or _is_redis_error(exc)):
                    raise
                self.stats.transport_errors += 1
                logger.warning("consumer round failed, retrying in %.1fs: %s", delay, exc)
                self._sleep(delay)
                delay = min(delay * 2, self.options.backoff_max)
                continue
            idle = 0 if settled else idle + 1
            if max_idle_rounds is not None and idle >= max_idle_rounds and self._ahead is None:
                return

    def _settle_overlapped(self, batch: _Batch, helper: _Helper) -> int:
        """:meth:`_settle` of ``batch``, its transaction on ``helper`` while this thread receives and prepares
        the next batch, when one is there already (kept in ``self._ahead``, so that whatever fails after it
        was received, the next round settles it). The deliveries settled (0: stopping, database down)."""
        if batch.prepared is None or not batch.good or self._stop.is_set():
            return self._settle(batch)
        later = _Later()
        stored = helper.submit(self._store, batch, later)
        try:
            if not self._stop.is_set():
                self._ahead = self._take(_PEEK)
        except BaseException:
            error = self._wait(stored, batch)
            if error is not None:
                logger.warning("receiving the next batch failed, and so did storing this one: %s", error)
            later.apply(self._now)
            raise
        error = self._wait(stored, batch)
        later.apply(self._now)  # what it committed is acknowledged (and what it refused, failed), here
        if error is not None:
            if not is_transient(error):
                raise error
            if not self._store_with_retry(batch, self._ahead, failed=error):
                return 0  # stopping while the database is down: nothing acknowledged
        self.stats.batches += 1
        return batch.received

    def _wait(self, stored: Future[None], batch: _Batch) -> BaseException | None:
        """The store's outcome (None: done). While it runs, the leases of ``batch`` and of the batch
        received ahead are renewed every ``claim_idle / 3`` (a slow store is not a dead consumer)."""
        while True:
            try:
                return stored.exception(timeout=self.options.claim_idle / 3)
            except TimeoutError:
                self._renew(batch, self._ahead)

    def _renew(self, batch: _Batch, ahead: _Batch | None) -> None:
        leased = [item for item, _ in batch.good]
        if ahead is not None:
            leased += [item for item, _ in ahead.good]
        try:
            self.transport.hold(leased)
        except Exception as exc:
            self.stats.transport_errors += 1
            logger.warning("could not renew the lease of held events: %s", exc)

    def drain(self, *, wait: float = 0.05, max_rounds: int = 10_000) -> int:
        """Settle everything available now (tests, tools): rounds until one comes back empty."""
        total = 0
        for _ in range(max_rounds):
            settled = self.run_once(wait)
            if not settled:
                return total
            total += settled
        return total

    def start(self) -> None:
        """Run in a daemon thread of its own (embedded use, e.g. an app's lifespan)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="llmproxy-audit-consumer", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask :meth:`run` to return after the batch in hand (signal handlers call this)."""
        self._stop.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the current batch and stop; closes the transport."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.transport.close()


def maintain_database(
    engine: Engine, options: AuditOptions, clock: Clock = SYSTEM_CLOCK
) -> tuple[list[Month], list[Month], set[Month]]:
    """Partitions for this month and ``partitions_ahead`` more; retention. (created, dropped, wanted)"""
    from datetime import UTC, datetime

    from ._partitions import existing_partitions

    current = month_of(datetime.fromtimestamp(clock.now(), UTC))
    wanted = {add_months(current, i) for i in range(options.partitions_ahead + 1)}
    with engine.begin() as conn:
        created = create_partitions(conn, wanted)
    dropped: list[Month] = []
    if options.retention_months is not None:
        signer = options.signer()
        if signer is None:
            raise ValueError("retention needs a checkpoint key (LLMPROXY_AUDIT_CHECKPOINT_KEY)")
        cutoff = add_months(current, -options.retention_months)
        with engine.begin() as conn:
            dropped = sorted(m for m in existing_partitions(conn) if m < cutoff)
            apply_retention(conn, cutoff, signer, int(clock.now() * 1000))
    return created, dropped, wanted


def _is_redis_error(exc: BaseException) -> bool:
    try:
        import redis
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return True
    try:
        import pika.exceptions
    except ImportError:
        return False
    return isinstance(exc, pika.exceptions.AMQPError)


def consumer_from_url(
    transport_url: str, database_url: str | Engine, options: AuditOptions | None = None, **kwargs: object
) -> AuditConsumer:
    """A consumer over Redis Streams or RabbitMQ (by URL) into the database at ``database_url``."""
    from llmproxy.core import create_engine

    options = options or AuditOptions()
    engine = database_url if isinstance(database_url, Engine) else create_engine(database_url)
    return AuditConsumer(transport_from_url(transport_url, options), engine, options, **kwargs)  # type: ignore[arg-type]


def transport_from_url(url: str, options: AuditOptions) -> ConsumerTransport:
    from ._transport import is_amqp_url

    if is_amqp_url(url):
        from ._amqp import AmqpConsumerTransport

        return AmqpConsumerTransport(url, options)
    from llmproxy.core import fail_fast_redis_options, redis_from_url

    from ._redis_streams import StreamConsumerTransport

    options_kw = fail_fast_redis_options(url)
    if options_kw:
        # XREADGROUP BLOCK waits up to `poll` seconds: the socket timeout must outlast it.
        options_kw["socket_timeout"] = options.poll + 5
    return StreamConsumerTransport(redis_from_url(url, **options_kw), options)


def dead_letters(transport_url: str, options: AuditOptions, count: int = 100) -> list[dict[str, object]]:
    """What reached the dead-letter stream or queue: ``id``, ``deliveries``, ``reason``, ``body`` (peeked)."""
    from ._transport import is_amqp_url

    if is_amqp_url(transport_url):
        from ._amqp import read_amqp_dead_letters

        return read_amqp_dead_letters(transport_url, options, count)
    from llmproxy.core import redis_from_url

    from ._redis_streams import read_dead_letters

    client = redis_from_url(transport_url)
    try:
        return read_dead_letters(client, options, count)
    finally:
        client.close()
