"""auth → quota → app on a real threaded WSGI server (a pool of two reused threads, as gunicorn's gthread,
waitress or cheroot serve): a request never sees another request's context or usage, and each tenant is
charged exactly the tokens its own requests reported."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest

from llmproxy.auth import ApiKeyService, Authenticator, AuthWSGIMiddleware
from llmproxy.core import (
    StartResponse,
    TenantRegistry,
    WSGIEnviron,
    create_engine,
    current_context,
    current_usage,
    redis_from_url,
    report_usage,
)
from llmproxy.core.testing import Backend
from llmproxy.quota import QuotaClient, QuotaWSGIMiddleware, StaticLimits


class PooledServer(WSGIServer):
    """wsgiref serving each connection on a pool of two reused threads."""

    pool = ThreadPoolExecutor(max_workers=2)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.pool.submit(self._handle, request, client_address)

    def _handle(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        finally:
            self.shutdown_request(request)


class Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def app(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
    """Tells what the request sees before it reports anything, then reports the tokens it was asked to."""
    ctx, usage = current_context(), current_usage()
    own = usage is not None and usage is environ.get("llmproxy.usage")
    seen = {
        "tenant": None if ctx is None or ctx.tenant_id is None else str(ctx.tenant_id),
        "usage": None if usage is None else {"own": own, "fresh": not usage.reported},
    }
    tokens = int(environ.get("QUERY_STRING") or 0)
    if tokens:
        report_usage(input_tokens=tokens)
    start_response("200 OK", [("content-type", "application/json")])
    return iter([json.dumps(seen).encode()])  # a body iterated after the app returned, as a stream is


@pytest.fixture
def served(backend: Backend) -> Iterator[tuple[str, dict[uuid.UUID, str], QuotaClient]]:
    engine = create_engine(backend.database_url)
    registry = TenantRegistry(engine)
    keys = ApiKeyService.from_urls(backend.redis_url, backend.database_url)
    tenants = [registry.create(f"pool-{uuid.uuid4().hex[:8]}").id for _ in range(3)]
    secrets = {tenant: keys.create(tenant, "k").secret for tenant in tenants}
    quota = QuotaClient(redis_from_url(backend.redis_url), StaticLimits())
    stack = AuthWSGIMiddleware(
        QuotaWSGIMiddleware(app, client=quota),
        authenticator=Authenticator(api_keys=keys),
        public_paths=("/public",),
    )
    server = make_server("127.0.0.1", 0, stack, server_class=PooledServer, handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", secrets, quota
    finally:
        server.shutdown()
        server.server_close()
        quota.close()
        keys.close()
        engine.dispose()


def test_a_pooled_thread_never_shows_a_request_another_requests_context_or_usage(
    served: tuple[str, dict[uuid.UUID, str], QuotaClient],
) -> None:
    base, secrets, quota = served
    charged = {tenant: 0 for tenant in secrets}
    lock = threading.Lock()
    problems: list[str] = []

    def user(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=base, timeout=10) as http:
            for _ in range(15):
                if rng.random() < 0.4:  # a public path: auth binds an anonymous context, quota passes through
                    seen = http.get("/public").json()
                    if seen != {"tenant": None, "usage": None}:
                        problems.append(f"a public request saw {seen}")
                    continue
                tenant = rng.choice(list(secrets))
                tokens = rng.randint(1, 1000)
                response = http.get(f"/v1/x?{tokens}", headers={"authorization": f"Bearer {secrets[tenant]}"})
                seen = response.json()
                if seen != {"tenant": str(tenant), "usage": {"own": True, "fresh": True}}:
                    problems.append(f"a request of {tenant} saw {seen}")
                with lock:
                    charged[tenant] += tokens

    users = [threading.Thread(target=user, args=(seed,)) for seed in range(4)]
    for t in users:
        t.start()
    for t in users:
        t.join()
    assert problems == []

    def usage() -> dict[uuid.UUID, int]:
        return {tenant: quota.check(tenant, "tokens_per_day", 0).current_usage for tenant in secrets}

    # each settle charged what its own request reported (the last ones settle as the server closes their
    # bodies, after the client has read them)
    deadline = time.monotonic() + 5
    while usage() != charged and time.monotonic() < deadline:
        time.sleep(0.01)
    assert usage() == charged
