"""``python -m llmproxy.flags watch``: print the flag set's changes as they reach this process (JSON lines).

Reads ``--redis-url`` / ``--database-url`` or ``LLMPROXY_REDIS_URL`` / ``LLMPROXY_DATABASE_URL``. Each line is
``{"event": "ready" | "changed", "version", "flags", "at"}`` (``at``: wall-clock seconds when this process
started serving the version). Useful to see a change arrive, and used by the propagation test and bench.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

from ._client import FlagsClient
from ._snapshot import Snapshot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmproxy.flags", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    watch = sub.add_parser("watch", help="print every change of the flag set")
    watch.add_argument(
        "--redis-url", default=os.environ.get("LLMPROXY_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    watch.add_argument("--database-url", default=os.environ.get("LLMPROXY_DATABASE_URL"))
    watch.add_argument("--set", default="default", help="flag set name")
    watch.add_argument("--seconds", type=float, default=None, help="stop after this long")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url (or LLMPROXY_DATABASE_URL) is required")

    lock = threading.Lock()

    def emit(event: str, snapshot: Snapshot, flags: list[str]) -> None:
        line = {"event": event, "version": snapshot.version, "flags": flags, "at": time.time()}
        with lock:
            print(json.dumps(line), flush=True)

    client = FlagsClient.from_urls(args.redis_url, args.database_url, set_name=args.set)
    client.add_listener(lambda _old, new, names: emit("changed", new, names))
    try:
        status = client.start()
        emit("ready" if status.ready else "not-ready", client.snapshot, sorted(client.snapshot))
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
