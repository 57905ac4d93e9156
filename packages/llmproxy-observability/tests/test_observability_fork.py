"""Fork safety with a real ``os.fork``: a child exports on connections of its own, under its own identity.

Exports go to a local OTLP receiver that keeps connections alive (as a collector does), so a child that
reused the parent's pooled socket would show up as the parent's client port.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from observability_apps import drive, http_scope, streaming_app

from llmproxy.observability import Telemetry, TelemetryMiddleware, configure_telemetry
from llmproxy.observability.testing import OTLPReceiver

pytestmark = pytest.mark.slow


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as running:
        yield running


def exporting_to(receiver: OTLPReceiver) -> Telemetry:
    # Export interval far away: only force_flush exports, so what each process sent is deterministic.
    return configure_telemetry(
        service_name="fork-test",
        otlp_endpoint=receiver.endpoint,
        metric_export_interval=3600,
        logs=False,
        set_global=False,
        environ={},
    )


def fork(child: Callable[[], None]) -> int:
    """Run ``child`` in a forked process; return its exit status (0 = it ran and returned)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            child()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_forked_child_exports_on_its_own_connection_as_a_new_instance(receiver: OTLPReceiver) -> None:
    telemetry = exporting_to(receiver)
    with telemetry.tracer.start_as_current_span("parent-before-fork"):
        pass
    telemetry.force_flush()  # the parent's session now holds a kept-alive connection
    parent_port = receiver.client_ports[-1]
    with telemetry.tracer.start_as_current_span("queued-at-fork"):
        pass  # still in the parent's batch queue when it forks

    def child() -> None:
        with telemetry.tracer.start_as_current_span("child"):
            pass
        assert telemetry.force_flush()

    assert fork(child) == 0
    assert receiver.wait_for(lambda r: any(s.name == "child" for s in r.spans()))
    with telemetry.tracer.start_as_current_span("parent-after-fork"):
        pass
    telemetry.force_flush()
    assert receiver.wait_for(lambda r: any(s.name == "parent-after-fork" for s in r.spans()))
    telemetry.shutdown()

    spans = {span.name: span for span in receiver.spans()}
    names = Counter(span.name for span in receiver.spans())
    assert names["queued-at-fork"] == 1  # the child dropped the parent's queue: nothing exported twice
    child_instance = spans["child"].resource["service.instance.id"]
    parent_instance = spans["parent-before-fork"].resource["service.instance.id"]
    assert child_instance != parent_instance
    assert spans["parent-after-fork"].resource["service.instance.id"] == parent_instance
    child_requests = [
        port for port, batch in zip(receiver.client_ports, receiver.batches, strict=True) if "child" in batch
    ]
    assert child_requests
    assert parent_port not in child_requests


def test_a_preloaded_app_serves_from_forked_workers_each_exporting_its_own_telemetry(
    receiver: OTLPReceiver,
) -> None:
    # gunicorn --preload: the master configures telemetry and builds the app, then forks the workers.
    telemetry = exporting_to(receiver)
    app = TelemetryMiddleware(streaming_app(3), telemetry=telemetry)
    requests_per_worker = 4

    def worker() -> None:
        async def serve() -> None:
            for _ in range(requests_per_worker):
                await drive(app, http_scope())

        asyncio.run(serve())
        assert telemetry.force_flush()

    assert [fork(worker) for _ in range(2)] == [0, 0]
    assert receiver.wait_for(lambda r: len(r.spans()) == 2 * requests_per_worker)
    assert receiver.wait_for(lambda r: len(list(r.metric("http.server.request.duration"))) == 2)
    telemetry.shutdown()

    by_instance = Counter(span.resource["service.instance.id"] for span in receiver.spans())
    assert sorted(by_instance.values()) == [requests_per_worker, requests_per_worker]
    counts = {}
    for metric in receiver.metric("http.server.request.duration"):
        counts[metric.resource["service.instance.id"]] = sum(value["count"] for _, value in metric.points)
    assert counts == dict(by_instance)  # each worker's metrics are its own requests, under its identity
    chunks = [m for m in receiver.metric("gen_ai.client.operation.time_per_output_chunk")]
    assert sorted(sum(v["count"] for _, v in m.points) for m in chunks) == [8, 8]  # (3 - 1) x 4 each
