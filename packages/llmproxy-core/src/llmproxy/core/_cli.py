"""``llmproxy`` command: database migrations for every installed llmproxy package."""

from __future__ import annotations

import argparse
import sys

from ._settings import LLMProxySettings


def main(argv: list[str] | None = None) -> int:
    try:
        from ._migrations import MigrationError, current_revisions, discover_migrations, downgrade, upgrade
    except ModuleNotFoundError as exc:
        print(
            f"llmproxy: migrations need the [sql] extra: pip install 'llmproxy-core[sql]' ({exc})",
            file=sys.stderr,
        )
        return 2
    parser = argparse.ArgumentParser(prog="llmproxy", description="llmproxy administration")
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: $LLMPROXY_DATABASE_URL)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("migrate", help="upgrade every installed package's schema, dependencies first")
    up.add_argument(
        "--only", action="append", metavar="PACKAGE", help="migrate only this package (and its needs)"
    )
    down = sub.add_parser("downgrade", help="downgrade one package (to base: its dependents first)")
    down.add_argument("package")
    down.add_argument("revision", nargs="?", default="base")
    sub.add_parser("migrations", help="list installed packages' migrations and applied revisions")
    args = parser.parse_args(argv)
    url = args.database_url or LLMProxySettings().database_url
    try:
        if args.command == "migrate":
            for name in upgrade(url, only=args.only):
                print(f"migrated {name}")
        elif args.command == "downgrade":
            for name in downgrade(url, args.package, args.revision):
                print(f"downgraded {name}")
        else:
            applied = current_revisions(url)
            for name, pkg in sorted(discover_migrations().items()):
                print(f"{name:20} {applied.get(name) or '-':20} {pkg.version_table}")
    except MigrationError as exc:
        print(f"llmproxy: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
