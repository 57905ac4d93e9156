"""The WSGI twin, behind a real threaded WSGI server: span per request, streams to their last chunk."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest
from observability_recorded import Recorded
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from llmproxy.core import (
    RequestContext,
    StartResponse,
    WSGIEnviron,
    bind_context_to_environ,
    closing,
    current_context,
    current_usage,
    report_usage,
    reset_current_context,
)
from llmproxy.observability import ROUTE_KEY, TelemetryWSGIMiddleware

TENANT = "00000000-0000-0000-0000-00000000000b"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def chat_app(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
    environ[ROUTE_KEY] = "/v1/chat/completions"
    # Bound for the request, reset when the server closes the body (as core's docs ask of a WSGI app).
    token = bind_context_to_environ(environ, RequestContext(tenant_id=TENANT, request_id="wsgi-1"))
    seen_span = trace.get_current_span().get_span_context().span_id
    chunks = int(environ.get("QUERY_STRING", "").partition("=")[2] or 0)
    start_response("200 OK", [("Content-Type", "text/event-stream"), ("X-Span", format(seen_span, "016x"))])

    def body() -> Iterator[bytes]:
        for index in range(chunks):
            report_usage(model="gpt-4o-mini", input_tokens=3, output_tokens=index + 1)
            yield f"data: {index}\n\n".encode()
        if not chunks:
            report_usage(model="gpt-4o-mini", input_tokens=3, output_tokens=5)
            yield b"{}"

    return closing(body(), lambda: reset_current_context(token))


@pytest.fixture
def served(recorded: Recorded) -> Iterator[str]:
    app = TelemetryWSGIMiddleware(chat_app, telemetry=recorded.telemetry)
    server = make_server("127.0.0.1", 0, app, server_class=_ThreadingServer, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_each_request_gets_a_server_span_current_in_the_handler(recorded: Recorded, served: str) -> None:
    response = httpx.post(f"{served}/v1/chat/completions", headers={"traceparent": TRACEPARENT})
    assert response.status_code == 200
    [span] = recorded.spans()
    assert span.kind is SpanKind.SERVER
    assert span.name == "POST /v1/chat/completions"
    assert format(span.context.trace_id, "032x") == TRACEPARENT.split("-")[1]
    assert response.headers["x-span"] == format(span.context.span_id, "016x")
    attributes = dict(span.attributes or {})
    assert attributes["llmproxy.tenant.id"] == TENANT
    assert attributes["llmproxy.request.id"] == "wsgi-1"
    assert attributes["gen_ai.usage.output_tokens"] == 5
    assert attributes["http.response.status_code"] == 200


def test_a_streamed_body_records_first_chunk_once_and_n_minus_one_intervals(
    recorded: Recorded, served: str
) -> None:
    assert httpx.post(f"{served}/v1/chat/completions?chunks=5").status_code == 200
    [(_, first)] = recorded.points("gen_ai.client.operation.time_to_first_chunk")
    [(_, per_chunk)] = recorded.points("gen_ai.client.operation.time_per_output_chunk")
    assert (first.count, per_chunk.count) == (1, 4)
    usage = {a["gen_ai.token.type"]: p.sum for a, p in recorded.points("gen_ai.client.token.usage")}
    assert usage == {"input": 3, "output": 5}


def test_concurrent_requests_on_server_threads_keep_their_own_spans(recorded: Recorded, served: str) -> None:
    with httpx.Client() as http:
        results: list[int] = []

        def call() -> None:
            results.append(http.post(f"{served}/v1/chat/completions?chunks=2").status_code)

        threads = [threading.Thread(target=call) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == [200] * 6
    spans = recorded.spans()
    assert len(spans) == 6
    assert all(span.parent is None for span in spans)
    assert len({span.context.trace_id for span in spans}) == 6
    [(_, requests)] = recorded.points("llmproxy.requests")
    assert requests == 6
    assert recorded.points("http.server.active_requests")[0][1] == 0


def test_after_the_body_closes_the_thread_holds_no_span_or_usage(recorded: Recorded) -> None:
    app = TelemetryWSGIMiddleware(chat_app, telemetry=recorded.telemetry)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/chat/completions", "wsgi.url_scheme": "http"}
    body = app(environ, lambda status, headers, exc_info=None: None)
    assert b"".join(body) == b"{}"
    body.close()  # type: ignore[attr-defined]
    assert not trace.get_current_span().get_span_context().is_valid
    assert current_usage() is None
    assert current_context() is None
    assert len(recorded.spans()) == 1


def test_an_exception_from_the_app_is_recorded_and_propagates(recorded: Recorded) -> None:
    def broken(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        raise ValueError("bad")

    app = TelemetryWSGIMiddleware(broken, telemetry=recorded.telemetry)
    with pytest.raises(ValueError, match="bad"):
        app({"REQUEST_METHOD": "GET", "PATH_INFO": "/x"}, lambda *a: None)
    [span] = recorded.spans()
    assert (span.attributes or {})["error.type"] == "ValueError"
    assert not trace.get_current_span().get_span_context().is_valid
