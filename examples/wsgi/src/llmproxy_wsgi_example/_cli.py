"""``llmproxy-wsgi-example serve | migrate | create-key`` (also ``python -m llmproxy_wsgi_example``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from llmproxy.auth import ApiKeyService
from llmproxy.core import TenantRegistry, create_engine, is_sqlite, upgrade

from ._app import create_wsgi_app
from ._server import make_threaded_server
from ._settings import WSGISettings


def _tenant_id(registry: TenantRegistry, name: str) -> str:
    for tenant in registry.list(limit=1000):
        if tenant.name == name:
            return str(tenant.id)
    return str(registry.create(name).id)


def create_key(settings: WSGISettings, tenant_name: str) -> str:
    """A new API key for the tenant named ``tenant_name`` (created if missing); the secret, shown once."""
    engine = create_engine(settings.database_url)
    try:
        tenant_id = _tenant_id(TenantRegistry(engine), tenant_name)
        keys = ApiKeyService.from_urls(settings.redis_url, settings.database_url)
        try:
            return keys.create(tenant_id, "wsgi-example").secret
        finally:
            keys.close()
    finally:
        engine.dispose()


def serve(settings: WSGISettings) -> None:
    if is_sqlite(settings.database_url):
        upgrade(settings.database_url)  # the embedded demo needs no separate step
    gateway = create_wsgi_app(settings)
    server = make_threaded_server(gateway, settings.host, settings.port)
    print(f"serving on http://{settings.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        gateway.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmproxy-wsgi-example", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve the app (threaded wsgiref server)")
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    commands.add_parser("migrate", help="upgrade the database (every installed llmproxy package)")
    key = commands.add_parser("create-key", help="print a new API key for a tenant (created if missing)")
    key.add_argument("tenant", help="the tenant's name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    given = {name: value for name in ("host", "port") if (value := getattr(args, name, None)) is not None}
    settings = WSGISettings(**given)
    if args.command == "migrate":
        upgrade(settings.database_url)
    elif args.command == "create-key":
        if is_sqlite(settings.database_url):
            upgrade(settings.database_url)
        print(create_key(settings, args.tenant))
    else:
        serve(settings)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
