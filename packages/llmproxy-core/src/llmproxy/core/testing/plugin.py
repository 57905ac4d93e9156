"""pytest plugin: the backends every llmproxy test suite runs on.

Enable with ``pytest_plugins = ["llmproxy.core.testing.plugin"]`` in a root ``conftest.py``.

Fixtures (``embedded`` = fakeredis + SQLite, ``real`` = a throwaway redis-server + a fresh PostgreSQL
database):

- ``backend``: a :class:`Backend` parametrized over both kinds; its database is migrated (every installed
  package), its Redis empty.
- ``redis_url`` / ``database_url``: the same, one concern at a time, parametrized over both kinds.
- ``real_backend``, ``real_redis_url``, ``real_database_url``: real services only.
- ``empty_database_url``: parametrized, not migrated (for migration tests).
- ``proxied_backend``: real services behind :class:`TcpProxy` objects the test can cut and restore.
- ``redis_cluster_url``: a local 3-master Redis Cluster (session-wide), flushed per test.
- ``manual_clock``: a :class:`~llmproxy.core.ManualClock`.
- ``tcp_proxy``: factory for more proxies.

Without the services the ``real`` variants skip; with ``CI=true`` they fail.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .._clock import ManualClock
from ._proxy import TcpProxy
from ._services import (
    RedisClusterNodes,
    RedisServer,
    create_postgres_database,
    drop_postgres_database,
    postgres_available,
    service_unavailable,
    url_through,
)

KINDS = ("embedded", "real")


@dataclass(frozen=True)
class Backend:
    kind: str
    redis_url: str
    database_url: str
    redis_proxy: TcpProxy | None = None
    database_proxy: TcpProxy | None = None

    @property
    def is_real(self) -> bool:
        return self.kind == "real"


# -- real services (session) -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _redis_server() -> Iterator[RedisServer | str]:
    try:
        server = RedisServer().start()
    except (FileNotFoundError, RuntimeError) as exc:
        yield f"cannot start a throwaway redis-server: {exc}"
        return
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _postgres_template() -> Iterator[str]:
    """A migrated database used as the template of every test's fresh database."""
    problem = postgres_available()
    if problem:
        yield "!" + problem
        return
    from .._migrations import upgrade

    url = create_postgres_database()
    upgrade(url)
    yield url
    drop_postgres_database(url)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .._migrations import upgrade

    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def _redis_cluster() -> Iterator[RedisClusterNodes | str]:
    cluster = RedisClusterNodes()
    try:
        cluster.start()
    except Exception as exc:
        cluster.stop()
        yield f"cannot start a local Redis Cluster: {exc}"
        return
    yield cluster
    cluster.stop()


# -- per-test URLs -----------------------------------------------------------------------------------------


@pytest.fixture
def real_redis_url(_redis_server: RedisServer | str) -> str:
    if isinstance(_redis_server, str):
        service_unavailable(_redis_server)
        raise AssertionError("unreachable")
    import redis

    client = redis.Redis(port=_redis_server.port)
    client.flushall()
    client.close()
    return _redis_server.url


@pytest.fixture
def real_database_url(_postgres_template: str) -> Iterator[str]:
    if _postgres_template.startswith("!"):
        service_unavailable(_postgres_template[1:])
    import sqlalchemy as sa

    url = create_postgres_database(template=str(sa.make_url(_postgres_template).database))
    yield url
    drop_postgres_database(url)


@pytest.fixture
def real_empty_database_url(_postgres_template: str) -> Iterator[str]:
    if _postgres_template.startswith("!"):
        service_unavailable(_postgres_template[1:])
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture
def embedded_redis_url() -> str:
    return f"memory://test-{uuid.uuid4().hex}"


@pytest.fixture
def embedded_database_url(_sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "llmproxy.db"
    shutil.copyfile(_sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=KINDS)
def redis_url(request: pytest.FixtureRequest) -> str:
    name = "real_redis_url" if request.param == "real" else "embedded_redis_url"
    return str(request.getfixturevalue(name))


@pytest.fixture(params=KINDS)
def database_url(request: pytest.FixtureRequest) -> str:
    name = "real_database_url" if request.param == "real" else "embedded_database_url"
    return str(request.getfixturevalue(name))


@pytest.fixture(params=KINDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "real":
        return str(request.getfixturevalue("real_empty_database_url"))
    return f"sqlite:///{tmp_path / 'empty.db'}"


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "real":
        return request.getfixturevalue("real_backend")  # type: ignore[no-any-return]
    return Backend(
        "embedded",
        request.getfixturevalue("embedded_redis_url"),
        request.getfixturevalue("embedded_database_url"),
    )


@pytest.fixture
def real_backend(real_redis_url: str, real_database_url: str) -> Backend:
    return Backend("real", real_redis_url, real_database_url)


@pytest.fixture
def tcp_proxy() -> Iterator[Callable[[int], TcpProxy]]:
    proxies: list[TcpProxy] = []

    def make(port: int, host: str = "127.0.0.1") -> TcpProxy:
        proxy = TcpProxy(port, host)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.fixture
def proxied_backend(real_backend: Backend, tcp_proxy: Callable[[int], TcpProxy]) -> Backend:
    """Real Redis and PostgreSQL, each reached through a proxy the test can ``cut()`` and ``restore()``."""
    import sqlalchemy as sa

    redis_port = int(real_backend.redis_url.rsplit(":", 1)[1].split("/", 1)[0])
    pg_port = sa.make_url(real_backend.database_url).port or 5432
    redis_proxy = tcp_proxy(redis_port)
    pg_proxy = tcp_proxy(pg_port)
    return Backend(
        "real",
        url_through(real_backend.redis_url, redis_proxy.host, redis_proxy.port),
        url_through(real_backend.database_url, pg_proxy.host, pg_proxy.port),
        redis_proxy=redis_proxy,
        database_proxy=pg_proxy,
    )


@pytest.fixture
def redis_cluster_url(_redis_cluster: RedisClusterNodes | str) -> str:
    if isinstance(_redis_cluster, str):
        service_unavailable(_redis_cluster)
        raise AssertionError("unreachable")
    import redis

    for node in _redis_cluster.nodes:
        client = redis.Redis(port=node.port)
        client.flushall()
        client.close()
    return _redis_cluster.url


@pytest.fixture
def manual_clock() -> ManualClock:
    return ManualClock()
