"""``llmproxy-metering flush``: the flush worker as a process of its own (the seed's MeteringFlushWorker)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from llmproxy.core import LLMProxySettings, create_engine, redis_from_url

from ._flusher import Flusher
from ._models import MeteringOptions


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmproxy-metering", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    flush = commands.add_parser("flush", help="copy usage from Redis to PostgreSQL, every --interval seconds")
    flush.add_argument("--once", action="store_true", help="flush once and exit (prints what was written)")
    flush.add_argument("--interval", type=float, default=None, help="seconds between flushes (default 60)")
    flush.add_argument("--ttl", type=int, default=None, help="the recorders' bucket TTL in seconds")
    flush.add_argument(
        "--name", default="default", help="the cursor's name (one per independent flusher group)"
    )
    flush.add_argument("--redis-url", default=None, help="default: LLMPROXY_REDIS_URL")
    flush.add_argument("--database-url", default=None, help="default: LLMPROXY_DATABASE_URL")
    flush.add_argument("--log-level", default="INFO")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = LLMProxySettings()
    overrides: dict[str, Any] = {}
    if args.interval is not None:
        overrides["flush_interval"] = args.interval
    if args.ttl is not None:
        overrides["ttl"] = args.ttl
    try:
        options = MeteringOptions(**overrides)
    except ValidationError as exc:
        print(f"llmproxy-metering: invalid option: {exc}", file=sys.stderr)
        return 2
    redis = redis_from_url(args.redis_url or settings.redis_url)
    engine = create_engine(args.database_url or settings.database_url)
    flusher = Flusher(redis, engine, options=options, name=args.name)
    try:
        if args.once:
            result = flusher.run_once()
            print(
                json.dumps(
                    {
                        "buckets": result.buckets,
                        "rows": result.rows,
                        "tenants": result.tenants,
                        "unknown_tenants": result.unknown_tenants,
                        "cursor_ms": result.cursor_ms,
                    }
                )
            )
            return 0
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        flusher.run(stop)
        return 0
    finally:
        redis.close()
        engine.dispose()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
