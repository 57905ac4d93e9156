"""Shared vocabulary of the llmproxy packages.

The SQL parts (engines, the shared ``metadata``, the tenant registry, migrations) need the ``[sql]`` extra
(SQLAlchemy + Alembic); they are imported on first use, so a package that needs only the vocabulary
(context, usage channel, clock, Redis, edge helpers, write-behind) does not install or import them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._clock import SYSTEM_CLOCK, Clock, ManualClock, SystemClock
from ._context import (
    ENVIRON_KEY,
    SCOPE_KEY,
    RequestContext,
    bind_context_to_environ,
    bind_context_to_scope,
    context_from_environ,
    context_from_scope,
    current_context,
    ensure_context,
    ensure_environ_context,
    parse_tenant_id,
    reset_current_context,
    set_current_context,
    use_context,
)
from ._database_url import DatabaseURLError
from ._edge import (
    BodyTooLarge,
    ClientDisconnected,
    EdgeError,
    InvalidContentLength,
    content_length,
    header_values,
    path_prefixes,
    path_under,
    read_body,
    read_wsgi_body,
    replay_body,
    send_error,
    send_json,
    status_line,
    wsgi_error,
    wsgi_json,
)
from ._errors import openai_error_body
from ._flow import Flow, arun_flow, run_flow
from ._options import Options
from ._redis import (
    AsyncRedis,
    RedisURLError,
    SyncRedis,
    async_redis_from_url,
    fail_fast_redis_options,
    is_memory_url,
    redis_from_url,
)
from ._settings import LLMProxySettings
from ._tasks import cancel_and_wait, raise_if_cancelling
from ._types import ASGIApp, Message, Receive, Scope, Send, StartResponse, WSGIApp, WSGIEnviron
from ._usage import (
    Usage,
    bind_environ_usage,
    bind_usage,
    current_usage,
    open_environ_usage,
    open_usage,
    report_usage,
    reset_usage,
    use_usage,
)
from ._version import __version__
from ._watch import ResponseWatch, WSGIResponseWatch, closing

if TYPE_CHECKING:
    from ._line import PackedCommand, resp_bulk, resp_head
    from ._migrations import (
        MigrationError,
        MigrationPackage,
        create_schema,
        current_revisions,
        discover_migrations,
        downgrade,
        drop_schema,
        run_alembic_env,
        upgrade,
    )
    from ._registry import AsyncTenantRegistry
    from ._registry_sync import TenantRegistry
    from ._sql import SCHEMAS, Base, create_async_engine, create_engine, is_sqlite, metadata, tenant_id_column
    from ._tenants import Tenant, TenantExists, TenantNotFound, tenants_table
    from ._writebehind import AsyncWriteBehind, Script, WriteBehind, WriteBehindFull, WriteBehindStats

#: names imported on first use, by module: SQL needs the [sql] extra, the write-behind redis-py ([redis])
_LAZY = {
    "._sql": (
        "SCHEMAS", "Base", "create_async_engine", "create_engine", "is_sqlite", "metadata",
        "tenant_id_column",
    ),
    "._tenants": ("Tenant", "TenantExists", "TenantNotFound", "tenants_table"),
    "._registry": ("AsyncTenantRegistry",),
    "._registry_sync": ("TenantRegistry",),
    "._migrations": (
        "MigrationError", "MigrationPackage", "create_schema", "current_revisions", "discover_migrations",
        "downgrade", "drop_schema", "run_alembic_env", "upgrade",
    ),
    "._writebehind": ("AsyncWriteBehind", "Script", "WriteBehind", "WriteBehindFull", "WriteBehindStats"),
    "._line": ("PackedCommand", "resp_bulk", "resp_head"),
}  # fmt: skip
_LAZY_NAMES = {name: module for module, names in _LAZY.items() for name in names}
_EXTRA = {
    "._sql": "sql",
    "._tenants": "sql",
    "._registry": "sql",
    "._registry_sync": "sql",
    "._migrations": "sql",
    "._writebehind": "redis",
    "._line": "redis",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(module_name, __name__)
    except ModuleNotFoundError as exc:
        extra = _EXTRA[module_name]
        raise ImportError(
            f"llmproxy.core.{name} needs the [{extra}] extra: pip install 'llmproxy-core[{extra}]' ({exc})"
        ) from exc
    value = getattr(module, name)
    globals()[name] = value
    return value


__all__ = [
    "ENVIRON_KEY",
    "SCHEMAS",
    "SCOPE_KEY",
    "SYSTEM_CLOCK",
    "ASGIApp",
    "AsyncRedis",
    "AsyncTenantRegistry",
    "AsyncWriteBehind",
    "Base",
    "BodyTooLarge",
    "ClientDisconnected",
    "Clock",
    "DatabaseURLError",
    "EdgeError",
    "Flow",
    "InvalidContentLength",
    "LLMProxySettings",
    "ManualClock",
    "Message",
    "MigrationError",
    "MigrationPackage",
    "Options",
    "PackedCommand",
    "Receive",
    "RedisURLError",
    "RequestContext",
    "ResponseWatch",
    "Scope",
    "Script",
    "Send",
    "StartResponse",
    "SyncRedis",
    "SystemClock",
    "Tenant",
    "TenantExists",
    "TenantNotFound",
    "TenantRegistry",
    "Usage",
    "WSGIApp",
    "WSGIEnviron",
    "WSGIResponseWatch",
    "WriteBehind",
    "WriteBehindFull",
    "WriteBehindStats",
    "__version__",
    "arun_flow",
    "async_redis_from_url",
    "bind_context_to_environ",
    "bind_context_to_scope",
    "bind_environ_usage",
    "bind_usage",
    "cancel_and_wait",
    "closing",
    "content_length",
    "context_from_environ",
    "context_from_scope",
    "create_async_engine",
    "create_engine",
    "create_schema",
    "current_context",
    "current_revisions",
    "current_usage",
    "discover_migrations",
    "downgrade",
    "drop_schema",
    "ensure_context",
    "ensure_environ_context",
    "fail_fast_redis_options",
    "header_values",
    "is_memory_url",
    "is_sqlite",
    "metadata",
    "open_environ_usage",
    "open_usage",
    "openai_error_body",
    "parse_tenant_id",
    "path_prefixes",
    "path_under",
    "raise_if_cancelling",
    "read_body",
    "read_wsgi_body",
    "redis_from_url",
    "replay_body",
    "report_usage",
    "reset_current_context",
    "reset_usage",
    "resp_bulk",
    "resp_head",
    "run_alembic_env",
    "run_flow",
    "send_error",
    "send_json",
    "set_current_context",
    "status_line",
    "tenant_id_column",
    "tenants_table",
    "upgrade",
    "use_context",
    "use_usage",
    "wsgi_error",
    "wsgi_json",
]
