"""``llmproxy-gateway workers``: the audit consumer and the metering flusher, from the gateway's settings.

The seed's workers, as processes of their own: each is the package's worker (llmproxy-audit's
``AuditConsumer``, llmproxy-metering's ``Flusher``) configured from the same ``LLMPROXY_*`` settings as the
gateway, so a deployment has one configuration. Run one per process (``workers audit``, ``workers metering``:
each can be killed, restarted and scaled on its own) or both in one (``workers``). SIGTERM / SIGINT: the
consumer finishes and acknowledges the batch in hand, the flusher its flush, then the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Collection

from llmproxy.audit import consumer_from_url
from llmproxy.core import create_engine, redis_from_url
from llmproxy.metering import Flusher, MeteringOptions

from ._settings import GatewaySettings

logger = logging.getLogger("llmproxy_gateway.workers")

#: What ``workers`` can run.
WORKERS = ("audit", "metering")


def _audit_worker(settings: GatewaySettings, stop: threading.Event) -> Callable[[], None]:
    audit = settings.audit
    consumer = consumer_from_url(audit.transport_url, settings.database_url, audit.options())

    def run() -> None:
        def stop_when_asked() -> None:
            stop.wait()
            consumer.request_stop()  # run() returns after the batch in hand, acknowledged

        try:
            consumer.maintain()  # this month's partitions (and the next), before the first batch needs them
            threading.Thread(target=stop_when_asked, name="audit-consumer-stop", daemon=True).start()
            consumer.run()
        finally:
            consumer.transport.close()
            consumer.engine.dispose()
            logger.info("audit consumer stopped", extra={"stats": consumer.stats.snapshot()})

    return run


def _metering_worker(settings: GatewaySettings, stop: threading.Event) -> Callable[[], None]:
    options = MeteringOptions(flush_interval=settings.metering.flush_interval)
    redis = redis_from_url(settings.redis_url)
    engine = create_engine(settings.database_url, **settings.database_timeouts())
    flusher = Flusher(redis, engine, options=options)

    def run() -> None:
        try:
            flusher.run(stop)
            flusher.run_once()  # what was recorded since the last flush
        except Exception as exc:
            logger.warning("final metering flush failed: %s: %s", type(exc).__name__, exc)
        finally:
            redis.close()
            engine.dispose()
            logger.info("metering flusher stopped")

    return run


def run_workers(
    settings: GatewaySettings, names: Collection[str], stop: threading.Event | None = None
) -> int:
    """Run the named workers (all by default) until ``stop`` is set or SIGTERM / SIGINT arrives."""
    unknown = set(names) - set(WORKERS)
    if unknown:
        raise ValueError(f"unknown worker(s) {', '.join(sorted(unknown))}: choose from {', '.join(WORKERS)}")
    chosen = [name for name in WORKERS if name in names] if names else list(WORKERS)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    build = {"audit": _audit_worker, "metering": _metering_worker}
    failed: list[str] = []

    def running(name: str, work: Callable[[], None]) -> Callable[[], None]:
        def target() -> None:
            try:
                work()
            except BaseException:
                logger.exception("worker %s failed", name)
                failed.append(name)
                stop.set()  # one worker down: the process exits (non-zero), its supervisor restarts it
            else:
                if not stop.is_set():
                    failed.append(name)
                    stop.set()

        return target

    threads = [
        threading.Thread(target=running(name, build[name](settings, stop)), name=f"worker-{name}")
        for name in chosen
    ]
    for thread in threads:
        thread.start()
    logger.info("workers running", extra={"workers": chosen})
    while any(thread.is_alive() for thread in threads):
        for thread in threads:
            thread.join(0.5)
    return 1 if failed else 0
