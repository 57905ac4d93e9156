"""Test helpers for llmproxy packages and for applications that use them."""

from ._lifespan import lifespan
from ._proxy import TcpProxy
from ._services import (
    IN_CI,
    POSTGRES_ADMIN_URL,
    RedisClusterNodes,
    RedisServer,
    create_postgres_database,
    drop_postgres_database,
    free_port,
    postgres_available,
    service_unavailable,
    url_through,
)
from ._wait import eventually
from .plugin import Backend

__all__ = [
    "IN_CI",
    "POSTGRES_ADMIN_URL",
    "Backend",
    "RedisClusterNodes",
    "RedisServer",
    "TcpProxy",
    "create_postgres_database",
    "drop_postgres_database",
    "eventually",
    "free_port",
    "lifespan",
    "postgres_available",
    "service_unavailable",
    "url_through",
]
