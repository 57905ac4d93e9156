"""Redis and PostgreSQL really cut (TcpProxy): serve the last snapshot, count, recover by themselves."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from llmproxy.core.testing import Backend
from llmproxy.flags import Flag, FlagsClient

Eventually = Callable[..., bool]


@pytest.fixture
def clients(proxied_backend: Backend) -> Iterator[Callable[..., FlagsClient]]:
    made: list[FlagsClient] = []

    def make(**kwargs: Any) -> FlagsClient:
        kwargs.setdefault("retry_max", 0.5)  # recover inside the test's patience
        client = FlagsClient.from_urls(
            proxied_backend.redis_url,
            proxied_backend.database_url,
            engine_options={"pool_pre_ping": True},
            **kwargs,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def test_with_redis_cut_a_change_still_arrives_by_polling_the_database(
    proxied_backend: Backend, clients: Callable[..., FlagsClient], eventually: Eventually
) -> None:
    writer, reader = clients(), clients(poll_interval=0.3)
    writer.put(Flag(key="before", default_value=True))
    assert reader.start().ready
    assert proxied_backend.redis_proxy is not None
    proxied_backend.redis_proxy.cut()

    assert reader.is_enabled("before")  # the last snapshot keeps serving
    writer.put(Flag(key="during", default_value=True))  # the database takes it; the publish waits
    assert writer.is_enabled("during")
    assert writer.stats.publishes_pending == 1
    assert eventually(lambda: reader.is_enabled("during"), timeout=5)
    assert reader.stats.redis_errors >= 1

    proxied_backend.redis_proxy.restore()
    assert eventually(lambda: writer.stats.publishes_pending == 0, timeout=5)  # sent once Redis is back
    writer.put(Flag(key="after", default_value=True))
    assert eventually(lambda: reader.is_enabled("after"), timeout=5)


def test_with_postgres_cut_the_snapshot_keeps_serving_and_writes_fail_cleanly(
    proxied_backend: Backend, clients: Callable[..., FlagsClient], eventually: Eventually
) -> None:
    writer = clients()
    writer.put(Flag(key="kept", default_value=True))
    reader = clients(poll_interval=0.3)
    assert reader.start().ready
    version = reader.snapshot_version
    assert proxied_backend.database_proxy is not None
    proxied_backend.database_proxy.cut()

    with pytest.raises(sa.exc.OperationalError):
        writer.put(Flag(key="refused", default_value=True))
    assert reader.is_enabled("kept")
    assert reader.snapshot_version == version
    # A cold start meanwhile comes up from the Redis cache, ready.
    cold = clients()
    assert cold.start().source == "redis"
    assert cold.is_enabled("kept")

    proxied_backend.database_proxy.restore()
    assert eventually(lambda: _put(writer, Flag(key="later", default_value=True)), timeout=5)
    assert eventually(lambda: reader.is_enabled("later") and cold.is_enabled("later"), timeout=5)
    assert "refused" not in reader.snapshot


def test_a_process_started_with_both_cut_serves_defaults_then_loads_by_itself(
    proxied_backend: Backend, clients: Callable[..., FlagsClient], eventually: Eventually
) -> None:
    clients().put(Flag(key="stored", default_value=True))
    assert proxied_backend.redis_proxy is not None
    assert proxied_backend.database_proxy is not None
    proxied_backend.redis_proxy.cut()
    proxied_backend.database_proxy.cut()
    client = clients(defaults=[Flag(key="fallback", default_value=True)])
    status = client.start(timeout=0.5)
    assert (status.ready, status.source) == (False, "defaults")
    assert status.reason is not None
    assert client.is_enabled("fallback")
    assert not client.is_enabled("stored")
    assert client.stats.redis_errors >= 1
    assert client.stats.database_errors >= 1

    proxied_backend.database_proxy.restore()
    proxied_backend.redis_proxy.restore()
    assert eventually(lambda: client.ready and client.is_enabled("stored"), timeout=8)
    assert client.status.reason is None


def _put(client: FlagsClient, flag: Flag) -> bool:
    try:
        client.put(flag)
    except sa.exc.OperationalError:
        return False
    return True
