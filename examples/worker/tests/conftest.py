"""Worker example fixtures: a worker on each backend kind, run in a thread until its queue drains."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmproxy.core import TenantRegistry
from llmproxy.core.testing import Backend, eventually
from llmproxy.observability import configure_telemetry
from llmproxy.ratelimit_config import ApiKeyLimit, GlobalLimit, TenantRateLimitConfiguration
from llmproxy_worker_example import Job, Worker, run_worker


@dataclass
class Harness:
    worker: Worker
    spans: InMemorySpanExporter
    backend: Backend
    tenants: TenantRegistry

    def new_tenant(self) -> uuid.UUID:
        return self.tenants.create(f"acme-{uuid.uuid4().hex[:8]}").id

    def job(self, tenant_id: uuid.UUID, prompt: str = "summarise this", **fields: object) -> Job:
        return Job.model_validate(
            {"id": f"job-{uuid.uuid4().hex[:12]}", "tenant_id": tenant_id, "model": "gpt-4o-mini",
             "prompt": prompt, **fields}
        )  # fmt: skip

    def drain(self, expected: int) -> None:
        """Run the loop in a thread until ``expected`` jobs were processed and the queue is empty."""
        stop = threading.Event()
        thread = threading.Thread(target=run_worker, args=(self.worker,), kwargs={"stop": stop, "poll": 0.02})
        thread.start()
        try:
            eventually(lambda: self.worker.stats.processed >= expected and len(self.worker.queue) == 0)
        finally:
            stop.set()
            thread.join(10)
        assert not thread.is_alive()

    def limit(
        self, tenant_id: uuid.UUID, *, requests_per_minute: int = 1000, tokens_per_minute: int = 10**6
    ) -> None:
        assert self.worker.limits is not None
        self.worker.limits.upsert(
            TenantRateLimitConfiguration(
                tenant_id=tenant_id,
                global_limit=GlobalLimit(
                    requests_per_minute=requests_per_minute,
                    requests_per_day=10**6,
                    tokens_per_minute=tokens_per_minute,
                    tokens_per_day=10**8,
                ),
                api_key_limit=ApiKeyLimit(requests_per_minute=1000, tokens_per_minute=10**6),
            )
        )


@pytest.fixture
def harness(backend: Backend) -> Iterator[Harness]:
    spans = InMemorySpanExporter()
    telemetry = configure_telemetry(
        service_name="worker-example-tests", span_exporters=[spans], set_global=False, logs=False, environ={}
    )
    worker = Worker.from_urls(backend.redis_url, backend.database_url, telemetry=telemetry)
    worker.start()
    assert worker.engine is not None
    try:
        yield Harness(worker, spans, backend, TenantRegistry(worker.engine))
    finally:
        worker.close()
        telemetry.shutdown()
