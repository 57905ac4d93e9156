"""Redis clients from URLs.

Schemes: ``redis://`` and ``rediss://`` (one server), ``redis+cluster://`` / ``rediss+cluster://``
(Redis Cluster, any seed node), ``redis+sentinel://host:port[,host:port...]/service_name[/db]``, and
``memory://[name]`` — an embedded Redis (fakeredis with Lua) shared by every client of the same name in
this process, so the embedded backend runs the very same scripts and code paths as a real server.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster

SyncRedis: TypeAlias = "redis.Redis | redis.cluster.RedisCluster"
AsyncRedis: TypeAlias = "redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster"

_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster", "redis+sentinel", "memory")

_memory_servers: dict[str, Any] = {}
_memory_lock = threading.Lock()


class RedisURLError(ValueError):
    """The Redis URL is malformed or uses an unsupported scheme."""


def _scheme(url: str) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise RedisURLError(
            f"not a Redis URL: {url!r} (expected one of {', '.join(s + '://' for s in _SCHEMES)})"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme not in _SCHEMES:
        raise RedisURLError(
            f"unsupported Redis URL scheme {scheme!r} in {url!r}; use one of "
            + ", ".join(s + "://" for s in _SCHEMES)
        )
    return scheme


def is_memory_url(url: str) -> bool:
    return _scheme(url) == "memory"


def memory_server(name: str = "default") -> Any:
    """The process-wide fakeredis server behind ``memory://name``."""
    import fakeredis

    with _memory_lock:
        server = _memory_servers.get(name)
        if server is None:
            server = _memory_servers[name] = fakeredis.FakeServer()
        return server


def _memory_name(url: str) -> str:
    rest = url.split("://", 1)[1].strip("/")
    return rest or "default"


def _sentinel_parts(url: str) -> tuple[list[tuple[str, int]], str, int, dict[str, Any]]:
    parts = urlsplit(url)
    hosts_part = parts.netloc.rsplit("@", 1)[-1]
    nodes: list[tuple[str, int]] = []
    for item in hosts_part.split(","):
        host, _, port = item.partition(":")
        if not host:
            raise RedisURLError(f"sentinel URL {url!r} has an empty host")
        nodes.append((host, int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise RedisURLError(f"sentinel URL {url!r} must name the service: redis+sentinel://host:port/service")
    service = path[0]
    db = int(path[1]) if len(path) > 1 else 0
    kwargs: dict[str, Any] = {}
    if parts.password:
        kwargs["password"] = unquote(parts.password)
    if parts.username:
        kwargs["username"] = unquote(parts.username)
    for key, values in parse_qs(parts.query).items():
        kwargs[key] = values[-1]
    return nodes, service, db, kwargs


def fail_fast_redis_options(url: str) -> dict[str, Any]:
    """redis-py client options for the request path: sub-second timeouts, one retry without backoff.

    Every llmproxy concern has a policy for Redis being unreachable (fail open, serve the last known value,
    count and drop); waiting seconds for a dead server on every request is not one. redis-py's defaults wait
    for the OS's TCP timeouts and retry with backoff. The embedded backend (``memory://``) needs none of it.
    Pass your own options after these to override them: ``redis_from_url(url, **{**fail_fast, **mine})``.
    """
    if is_memory_url(url):
        return {}
    from redis.backoff import NoBackoff

    retry = _fail_fast_retry_class()(NoBackoff(), 1)
    return {"socket_timeout": 0.5, "socket_connect_timeout": 0.5, "retry": retry}


@functools.cache
def _fail_fast_retry_class() -> type[Any]:
    from redis.retry import Retry

    class FailFastRetry(Retry):
        """:func:`fail_fast_redis_options`' policy: one retry without backoff. The options serve sync and
        asyncio clients alike; :func:`async_redis_from_url` gives an asyncio client the asyncio twin of this
        policy (redis-py 8 converts a synchronous ``Retry`` itself, with a warning for every client)."""

    return FailFastRetry


def _asyncio_retry(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with a fail-fast retry policy in its asyncio form."""
    retry = kwargs.get("retry")
    if isinstance(retry, _fail_fast_retry_class()):
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        return {**kwargs, "retry": Retry(NoBackoff(), retry.get_retries())}
    return kwargs


def redis_from_url(url: str, **kwargs: Any) -> SyncRedis:
    """A synchronous client (``redis.Redis`` or ``redis.cluster.RedisCluster``) for ``url``."""
    scheme = _scheme(url)
    if scheme == "memory":
        import fakeredis

        return fakeredis.FakeRedis(server=memory_server(_memory_name(url)), **kwargs)
    if scheme.endswith("+cluster"):
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(url.replace("+cluster", "", 1), **kwargs)
    if scheme == "redis+sentinel":
        from redis.sentinel import Sentinel

        nodes, service, db, extra = _sentinel_parts(url)
        sentinel = Sentinel(nodes, sentinel_kwargs={k: v for k, v in extra.items() if k == "password"})  # type: ignore[no-untyped-call,unused-ignore]
        master: redis.Redis = sentinel.master_for(service, db=db, **extra, **kwargs)  # type: ignore[no-untyped-call,unused-ignore]
        return master
    import redis

    return redis.Redis.from_url(url, **kwargs)


def async_redis_from_url(url: str, **kwargs: Any) -> AsyncRedis:
    """An asyncio client (``redis.asyncio.Redis`` or its cluster twin) for ``url``."""
    scheme = _scheme(url)
    if scheme == "memory":
        import fakeredis

        return fakeredis.FakeAsyncRedis(server=memory_server(_memory_name(url)), **kwargs)
    kwargs = _asyncio_retry(kwargs)
    if scheme.endswith("+cluster"):
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(url.replace("+cluster", "", 1), **kwargs)
    if scheme == "redis+sentinel":
        from redis.asyncio.sentinel import Sentinel

        nodes, service, db, extra = _sentinel_parts(url)
        sentinel = Sentinel(nodes, sentinel_kwargs={k: v for k, v in extra.items() if k == "password"})  # type: ignore[no-untyped-call,unused-ignore]
        amaster: redis.asyncio.Redis = sentinel.master_for(service, db=db, **extra, **kwargs)
        return amaster
    import redis.asyncio

    return redis.asyncio.Redis.from_url(url, **kwargs)
