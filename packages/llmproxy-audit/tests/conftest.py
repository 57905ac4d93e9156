"""Audit test fixtures: one ``stack`` (transport + database) per kind, each test with its own names."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from llmproxy.audit import AuditOptions
from llmproxy.core.testing import service_unavailable

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
CHECKPOINT_KEY = "audit-tests-checkpoint-key-0123456789"

#: ``embedded``: memory:// Redis Streams + SQLite; ``redis``: a real redis-server + PostgreSQL;
#: ``rabbitmq``: the local broker + PostgreSQL.
STACKS = ("embedded", "redis", "rabbitmq")


@dataclass(frozen=True)
class Stack:
    kind: str
    transport_url: str
    database_url: str
    options: AuditOptions

    def with_options(self, **changes: object) -> Stack:
        return Stack(
            self.kind, self.transport_url, self.database_url, self.options.model_copy(update=changes)
        )


def amqp_available(url: str = AMQP_URL) -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            pass
    except OSError as exc:
        return f"RabbitMQ not reachable at 127.0.0.1:5672: {exc}"
    try:
        import pika

        pika.BlockingConnection(pika.URLParameters(url)).close()
    except Exception as exc:
        return f"RabbitMQ refused {url}: {exc}"
    return None


def unique_options(**changes: object) -> AuditOptions:
    """Names of its own for one test, so parallel runs on one broker never collide."""
    tag = uuid.uuid4().hex[:12]
    return AuditOptions(
        stream=f"llmproxy:{{audit-{tag}}}:events",
        dead_letter_stream=f"llmproxy:{{audit-{tag}}}:dead-letter",
        amqp_prefix=f"llmproxy.audit.test-{tag}",
        checkpoint_key=CHECKPOINT_KEY,  # type: ignore[arg-type]
        **changes,  # type: ignore[arg-type]
    )


def delete_amqp_topology(url: str, options: AuditOptions) -> None:
    from llmproxy.audit._amqp import _connect, topology

    t = topology(options)
    try:
        conn = _connect(url)
    except Exception:
        return
    try:
        channel = conn.channel()
        for queue in (t.queue, t.dead_letter_queue):
            channel.queue_delete(queue)
        for exchange in (t.exchange, t.dead_letter_exchange):
            channel.exchange_delete(exchange)
    finally:
        conn.close()


@pytest.fixture
def amqp_url() -> str:
    problem = amqp_available()
    if problem:
        service_unavailable(problem)
    return AMQP_URL


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    options = unique_options()
    if request.param == "embedded":
        yield Stack(
            "embedded",
            request.getfixturevalue("embedded_redis_url"),
            request.getfixturevalue("embedded_database_url"),
            options,
        )
        return
    if request.param == "redis":
        yield Stack(
            "redis",
            request.getfixturevalue("real_redis_url"),
            request.getfixturevalue("real_database_url"),
            options,
        )
        return
    url = request.getfixturevalue("amqp_url")
    database = request.getfixturevalue("real_database_url")
    yield Stack("rabbitmq", url, database, options)
    delete_amqp_topology(url, options)


@pytest.fixture
def tenant() -> uuid.UUID:
    return uuid.uuid4()


@pytest.fixture
def options_factory() -> Callable[..., AuditOptions]:
    return unique_options
