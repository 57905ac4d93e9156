"""``llmproxy-audit``: the consumer worker, chain verification, checkpoints, partitions, dead letters."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import signal
import sys
import threading
import time
import uuid
from typing import Any

from llmproxy.core import create_engine

from ._chain import NO_TENANT
from ._consumer import consumer_from_url, dead_letters, maintain_database
from ._options import AuditSettings
from ._store import checkpoint_now
from ._verify import tenants_with_events, verify_chain


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmproxy-audit", description="llmproxy audit trail")
    parser.add_argument("--database-url", help="default: $LLMPROXY_DATABASE_URL")
    parser.add_argument(
        "--transport-url", help="default: $LLMPROXY_AUDIT_TRANSPORT_URL, else $LLMPROXY_REDIS_URL"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    consume = sub.add_parser("consume", help="move events from the transport into the database (a worker)")
    consume.add_argument("--batch-size", type=int)
    consume.add_argument("--max-deliveries", type=int)
    consume.add_argument(
        "--claim-idle", type=float, help="seconds before an unacknowledged event is reclaimed"
    )
    consume.add_argument("--poll", type=float, help="seconds to wait for new events per round")
    consume.add_argument("--amqp-prefix", help="RabbitMQ names' prefix (default llmproxy.audit)")
    consume.add_argument("--stream", help="Redis stream (default llmproxy:{audit}:events)")
    consume.add_argument("--dead-letter-stream", help="Redis stream (default llmproxy:{audit}:dead-letter)")
    consume.add_argument(
        "--exit-when-idle", type=int, metavar="ROUNDS", help="stop after ROUNDS empty rounds"
    )
    verify = sub.add_parser("verify", help="verify tenants' hash chains; exit 1 at the first broken link")
    who = verify.add_mutually_exclusive_group(required=True)
    who.add_argument("--tenant", help="a tenant id ('none' for events of no tenant)")
    who.add_argument("--all", action="store_true", help="every tenant with events")
    verify.add_argument(
        "--from-checkpoint", action="store_true", help="start at the latest signed checkpoint"
    )
    cp = sub.add_parser("checkpoint", help="sign the current head of a tenant's chain now")
    cp.add_argument("--tenant", required=True)
    sub.add_parser("maintain", help="create upcoming partitions and apply retention now")
    dead = sub.add_parser("dead-letters", help="print what reached the dead-letter stream/queue (JSON lines)")
    dead.add_argument("--count", type=int, default=100)
    return parser


def _tenant(value: str) -> uuid.UUID:
    return NO_TENANT if value.lower() == "none" else uuid.UUID(value)


#: Seconds between the consume worker's full garbage collections (its automatic collector is off).
_GC_INTERVAL = 10.0


def _collect_every(interval: float) -> threading.Thread:
    """A daemon thread running a full garbage collection every ``interval`` seconds."""

    def collect() -> None:
        while True:
            time.sleep(interval)
            gc.collect()

    thread = threading.Thread(target=collect, name="llmproxy-audit-gc", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = AuditSettings()
    database_url = args.database_url or settings.database_url
    transport_url = args.transport_url or settings.transport_url
    overrides: dict[str, Any] = {}
    names = (
        "batch_size",
        "max_deliveries",
        "claim_idle",
        "poll",
        "amqp_prefix",
        "stream",
        "dead_letter_stream",
    )
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    try:
        options = settings.options(**overrides)
    except ValueError as exc:
        print(f"llmproxy-audit: {exc}", file=sys.stderr)
        return 2
    if args.command == "consume":
        consumer = consumer_from_url(transport_url, database_url, options)

        def stop(_signum: int, _frame: object) -> None:
            consumer.request_stop()  # finish the batch in hand, acknowledge it, exit

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        # What is alive now (modules, the clients) lives as long as the worker: out of the collector's full
        # passes, which otherwise walk it again every few batches (measured: a sixth of the consumer's time).
        gc.freeze()
        # Nor does the collector run on its own: a round leaves no reference cycles behind (its objects are
        # freed by their reference counts), but the thousands of a batch are alive while it is built, and
        # every pass of the collector walked them again (measured: ~20% of a worker's throughput). Cycles an
        # error path may leave (tracebacks) are collected every few seconds.
        gc.disable()
        _collect_every(_GC_INTERVAL)
        # The store's thread waits on PostgreSQL with the GIL released and needs it back only briefly, a few
        # times a batch; at the default 5 ms switch interval each of those waited for the receiving thread's
        # next forced switch (measured: 1 ms served the overlap best of 5, 1, 0.5 and 0.2 ms).
        sys.setswitchinterval(0.001)
        consumer.run(max_idle_rounds=args.exit_when_idle)
        consumer.stop()
        print(json.dumps(consumer.stats.snapshot()), flush=True)
        return 0
    if args.command == "dead-letters":
        for item in dead_letters(transport_url, options, args.count):
            body = item["body"]
            print(
                json.dumps(
                    {**item, "body": body.decode("utf-8", "replace") if isinstance(body, bytes) else body}
                )
            )
        return 0
    engine = create_engine(database_url)
    try:
        if args.command == "verify":
            signer = options.signer()
            if signer is None:
                print(
                    "warning: no LLMPROXY_AUDIT_CHECKPOINT_KEY: signatures are not checked", file=sys.stderr
                )
            with engine.connect() as conn:
                tenants = tenants_with_events(conn) if args.all else [_tenant(args.tenant)]
                broken = 0
                for tenant in tenants:
                    report = verify_chain(
                        conn, tenant, signer=signer, from_latest_checkpoint=args.from_checkpoint
                    )
                    print(report.describe())
                    broken += not report.ok
            return 1 if broken else 0
        if args.command == "checkpoint":
            signer = options.signer()
            if signer is None:
                print(
                    "llmproxy-audit: set LLMPROXY_AUDIT_CHECKPOINT_KEY to sign checkpoints", file=sys.stderr
                )
                return 2
            with engine.begin() as conn:
                mark = checkpoint_now(conn, _tenant(args.tenant), signer, int(time.time() * 1000))
            print("no events" if mark is None else f"checkpoint at seq {mark.seq}: {mark.hash.hex()}")
            return 0
        created, dropped, _ = maintain_database(engine, options)
        print(json.dumps({"created": created, "dropped": dropped}))
        return 0
    finally:
        engine.dispose()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
