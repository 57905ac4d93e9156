"""``llmproxy-worker-example run | push | result | migrate`` (also ``python -m llmproxy_worker_example``)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import uuid
from collections.abc import Sequence

from llmproxy.core import fail_fast_redis_options, is_sqlite, redis_from_url, upgrade
from llmproxy.observability import configure_telemetry

from ._jobs import Job
from ._queue import JobQueue
from ._settings import WorkerSettings
from ._worker import Worker, run_worker


def _queue(settings: WorkerSettings) -> JobQueue:
    redis = redis_from_url(settings.redis_url, **fail_fast_redis_options(settings.redis_url))
    return JobQueue(redis, result_ttl=settings.worker_result_ttl)


def run(settings: WorkerSettings, max_jobs: int | None) -> int:
    if is_sqlite(settings.database_url):
        upgrade(settings.database_url)  # the embedded demo needs no separate step
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())  # finish the job in hand, then stop
    telemetry = configure_telemetry(service_name=settings.worker_service_name)
    worker = Worker.from_settings(settings, telemetry=telemetry)
    worker.start()
    try:
        stats = run_worker(worker, settings=settings, stop=stop, max_jobs=max_jobs)
    finally:
        worker.close()
        telemetry.shutdown()
    print(
        f"completed {stats.completed}, deferred {stats.deferred}, refused {stats.refused}, "
        f"rejected {stats.rejected}, failed {stats.failed}",
        flush=True,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmproxy-worker-example", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    loop = commands.add_parser("run", help="consume the queue until SIGTERM / Ctrl-C")
    loop.add_argument("--max-jobs", type=int, help="stop after this many jobs")
    push = commands.add_parser("push", help="queue a job")
    push.add_argument("--tenant", required=True, help="the tenant's id (a UUID)")
    push.add_argument("--prompt", required=True)
    push.add_argument("--model", default="gpt-4o-mini")
    push.add_argument("--max-tokens", type=int, default=64)
    push.add_argument("--id", help="the job's id (default: a random one)")
    show = commands.add_parser("result", help="print a job's result (JSON), if it is still kept")
    show.add_argument("--tenant", required=True)
    show.add_argument("--id", required=True)
    commands.add_parser("migrate", help="upgrade the database (every installed llmproxy package)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = WorkerSettings()
    if args.command == "run":
        return run(settings, args.max_jobs)
    if args.command == "migrate":
        upgrade(settings.database_url)
        return 0
    try:
        tenant = uuid.UUID(args.tenant)
    except ValueError:
        parser.error(f"--tenant: not a UUID: {args.tenant!r}")
    queue = _queue(settings)
    try:
        if args.command == "push":
            job = Job(
                id=args.id or uuid.uuid4().hex,
                tenant_id=tenant,
                model=args.model,
                prompt=args.prompt,
                max_tokens=args.max_tokens,
            )
            queue.push(job)
            print(job.id)
            return 0
        result = queue.result(tenant, args.id)
        if result is None:
            print(f"no result for job {args.id!r}", file=sys.stderr)
            return 1
        print(result.model_dump_json())
        return 0
    finally:
        queue.redis.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
