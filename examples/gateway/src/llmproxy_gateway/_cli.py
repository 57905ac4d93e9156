"""``llmproxy-gateway serve | admin | workers | migrate | create-tenant | create-key``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from llmproxy.core import MigrationError, TenantExists, upgrade

from ._bootstrap import banner, create_key, create_tenant, ensure_demo, prepare_data_dir
from ._logging import configure_logging
from ._settings import GatewaySettings

logger = logging.getLogger("llmproxy_gateway")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmproxy-gateway",
        description="The llmproxy example gateway, configured by LLMPROXY_* environment variables.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="migrate, create the demo tenant on first start, and serve HTTP")
    serve.add_argument("--host", help="bind address (default: $LLMPROXY_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: $LLMPROXY_PORT or 8000)")
    serve.add_argument("--no-migrate", action="store_true", help="do not apply migrations on start")
    serve.add_argument("--no-demo", action="store_true", help="do not create a demo tenant and key")
    serve.add_argument(
        "--bare",
        action="store_true",
        help="serve the app without the llmproxy middlewares (benchmark baseline)",
    )
    serve.add_argument(
        "--without",
        default="",
        metavar="NAMES",
        help="leave out these middlewares, comma-separated: audit, flags, metering, telemetry (auth and quota"
        " stay); e.g. to measure what each costs",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes behind the one port (uvicorn's; default 1: this process serves)",
    )
    admin = sub.add_parser("admin", help="serve the admin API alone (its own process; no /v1)")
    admin.add_argument("--host", help="bind address (default: $LLMPROXY_HOST or 127.0.0.1)")
    admin.add_argument("--port", type=int, help="port (default: $LLMPROXY_ADMIN_PORT or 8001)")
    admin.add_argument("--no-migrate", action="store_true", help="do not apply migrations on start")
    workers = sub.add_parser(
        "workers", help="run the audit consumer and/or the metering flusher until SIGTERM (default: both)"
    )
    workers.add_argument("names", nargs="*", metavar="WORKER", help="audit, metering (default: both)")
    sub.add_parser("migrate", help="apply every installed llmproxy package's migrations")
    tenant = sub.add_parser("create-tenant", help="create a tenant and print its id")
    tenant.add_argument("name")
    key = sub.add_parser("create-key", help="issue an API key for a tenant and print it (shown once)")
    key.add_argument("tenant", help="tenant id or name")
    key.add_argument("--name", default="cli", help="a label for the key")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    port_field = "admin_port" if args.command == "admin" else "port"
    overrides = {
        k: v
        for k, v in (("host", getattr(args, "host", None)), (port_field, getattr(args, "port", None)))
        if v
    }
    try:
        settings = GatewaySettings(**overrides)
    except ValueError as exc:
        print(f"llmproxy-gateway: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    prepare_data_dir(settings)
    try:
        if args.command == "migrate":
            for name in upgrade(settings.database_url):
                print(f"migrated {name}")
        elif args.command == "create-tenant":
            upgrade(settings.database_url)
            tenant = asyncio.run(create_tenant(settings, args.name))
            print(tenant.id)
        elif args.command == "create-key":
            upgrade(settings.database_url)
            print(asyncio.run(create_key(settings, args.tenant, args.name)))
        elif args.command == "workers":
            from ._workers import run_workers

            return run_workers(settings, args.names)
        elif args.command == "admin":
            return _serve_admin(settings, migrate=not args.no_migrate)
        else:
            if args.workers < 1:
                raise ValueError("--workers must be >= 1")
            demo = settings.demo and not args.no_demo and not args.bare
            from ._app import parse_without

            without = parse_without(args.without)  # unknown names: ValueError, exit 2
            return _serve(
                settings,
                migrate=not args.no_migrate,
                demo=demo,
                bare=args.bare,
                without=without,
                workers=args.workers,
            )
    except (MigrationError, TenantExists, LookupError, ValueError) as exc:
        print(f"llmproxy-gateway: {exc}", file=sys.stderr)
        return 2
    return 0


def _serve(
    settings: GatewaySettings,
    *,
    migrate: bool,
    demo: bool,
    bare: bool = False,
    without: frozenset[str] = frozenset(),
    workers: int = 1,
) -> int:
    import uvicorn

    from ._app import create_app, create_bare_app

    if migrate:
        done = upgrade(settings.database_url)
        logger.info("migrations applied", extra={"packages": done})
    if demo:
        created = asyncio.run(ensure_demo(settings))
        print(banner(settings, created), flush=True)
    if workers > 1:
        # Each worker process builds its own app (clients, caches, write-behind) from the same environment.
        os.environ["LLMPROXY_GATEWAY_WITHOUT"] = ",".join(sorted(without))
        factory = "create_bare_app" if bare else "create_app_from_environment"
        # uvicorn SIGKILLs a worker that does not answer its health ping within the timeout (default 5 s):
        # a worker still importing on a busy machine would be killed with its queued writes.
        uvicorn.run(
            f"llmproxy_gateway._app:{factory}",
            factory=True,
            workers=workers,
            timeout_worker_healthcheck=30,
            host=settings.host,
            port=settings.port,
            log_config=None,
            server_header=False,
        )
        return 0
    app = create_bare_app(settings) if bare else create_app(settings, without=without)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, server_header=False)
    return 0


def _serve_admin(settings: GatewaySettings, *, migrate: bool) -> int:
    import uvicorn

    from ._app import create_admin_app

    if migrate:
        upgrade(settings.database_url)
    app = create_admin_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.admin_port, log_config=None, server_header=False)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
