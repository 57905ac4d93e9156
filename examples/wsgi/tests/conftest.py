"""WSGI example fixtures: the composed app in a real threaded wsgiref server, on each backend kind."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmproxy.core.testing import Backend
from llmproxy.observability import configure_telemetry
from llmproxy_wsgi_example import WSGIGateway, create_wsgi_app, make_threaded_server


@dataclass
class Served:
    gateway: WSGIGateway
    client: httpx.Client
    spans: InMemorySpanExporter
    backend: Backend
    tenant_id: uuid.UUID
    api_key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"}

    def chat(self, content: str = "hello there", **fields: object) -> httpx.Response:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **fields}
        return self.client.post("/v1/chat/completions", json=body, headers=self.auth)


@pytest.fixture
def served(backend: Backend) -> Iterator[Served]:
    spans = InMemorySpanExporter()
    telemetry = configure_telemetry(
        service_name="wsgi-example-tests", span_exporters=[spans], set_global=False, logs=False, environ={}
    )
    gateway = create_wsgi_app(
        redis_url=backend.redis_url, database_url=backend.database_url, telemetry=telemetry
    )
    server = make_threaded_server(gateway)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    tenant = gateway.backends.tenants.create(f"acme-{uuid.uuid4().hex[:8]}")
    key = gateway.backends.api_keys.create(tenant.id, "tests").secret
    client = httpx.Client(base_url=f"http://127.0.0.1:{server.server_port}", timeout=10)
    try:
        yield Served(gateway, client, spans, backend, tenant.id, key)
    finally:
        client.close()
        server.shutdown()
        server.server_close()
        thread.join(5)
        gateway.close()
        telemetry.shutdown()
