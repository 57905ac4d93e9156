"""Edge helpers: OpenAI-style errors, bounded bodies and response watching, for ASGI and WSGI."""

from __future__ import annotations

import io
import json
import threading
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest

from llmproxy.core import (
    BodyTooLarge,
    ClientDisconnected,
    EdgeError,
    InvalidContentLength,
    Message,
    RequestContext,
    ResponseWatch,
    WSGIResponseWatch,
    bind_context_to_environ,
    bind_environ_usage,
    closing,
    current_context,
    current_usage,
    read_body,
    read_wsgi_body,
    replay_body,
    report_usage,
    reset_current_context,
    reset_usage,
    send_error,
    wsgi_error,
)


def receiver(*chunks: bytes, disconnect: bool = False) -> Any:
    messages: list[Message] = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    if disconnect:
        messages = [*messages[:-1], {"type": "http.disconnect"}]

    async def receive() -> Message:
        return messages.pop(0)

    return receive


def scope(headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": "/v1/x", "headers": headers or []}


async def test_an_edge_error_is_sent_as_openai_json() -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await send_error(
        send, EdgeError(429, "slow down", code="rate_limit_exceeded", headers=[("retry-after", "2")])
    )
    start, body = sent
    assert start["status"] == 429
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"retry-after"] == b"2"
    assert int(headers[b"content-length"]) == len(body["body"])
    assert json.loads(body["body"]) == {
        "error": {
            "message": "slow down",
            "type": "invalid_request_error",
            "code": "rate_limit_exceeded",
            "param": None,
        }
    }


def test_a_wsgi_edge_error_has_a_status_line_and_the_same_body() -> None:
    started: list[Any] = []
    body = wsgi_error(lambda status, headers: started.append((status, headers)), EdgeError(413, "too big"))
    assert started[0][0] == "413 Request Entity Too Large"
    assert json.loads(b"".join(body))["error"]["message"] == "too big"


async def test_a_body_in_chunks_is_read_whole_and_replayed() -> None:
    body = await read_body(scope(), receiver(b"ab", b"cd", b"e"), 10)
    assert body == b"abcde"
    replayed = replay_body(body, receiver(b"never"))
    assert (await replayed())["body"] == b"abcde"


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    async def receive() -> Message:  # pragma: no cover - must not be called
        raise AssertionError("read")

    with pytest.raises(BodyTooLarge) as info:
        await read_body(scope([(b"content-length", b"11")]), receive, 10)
    assert info.value.status == 413


async def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit() -> None:
    with pytest.raises(BodyTooLarge):
        await read_body(scope(), receiver(b"123456", b"789012", b"x"), 10)


@pytest.mark.parametrize("value", [b"abc", b"-1", b"1.5", b"+3"])
async def test_a_malformed_content_length_is_a_400_naming_the_header(value: bytes) -> None:
    with pytest.raises(InvalidContentLength) as info:
        await read_body(scope([(b"content-length", value)]), receiver(b""), 10)
    assert (info.value.status, info.value.param) == (400, "Content-Length")


async def test_two_different_content_lengths_are_refused() -> None:
    with pytest.raises(InvalidContentLength):
        await read_body(scope([(b"content-length", b"1"), (b"content-length", b"2")]), receiver(b"a"), 10)


async def test_a_client_that_disconnects_mid_body_is_reported() -> None:
    with pytest.raises(ClientDisconnected):
        await read_body(scope(), receiver(b"ab", b"cd", disconnect=True), 10)


def test_a_wsgi_body_follows_content_length_and_the_limit() -> None:
    environ = {"CONTENT_LENGTH": "3", "wsgi.input": io.BytesIO(b"abcdef")}
    assert read_wsgi_body(environ, 10) == b"abc"
    with pytest.raises(BodyTooLarge):
        read_wsgi_body({"CONTENT_LENGTH": "11", "wsgi.input": io.BytesIO(b"")}, 10)
    with pytest.raises(InvalidContentLength):
        read_wsgi_body({"CONTENT_LENGTH": "x", "wsgi.input": io.BytesIO(b"")}, 10)
    chunked = {"wsgi.input": io.BytesIO(b"z" * 11), "wsgi.input_terminated": True}
    with pytest.raises(BodyTooLarge):
        read_wsgi_body(chunked, 10)
    assert read_wsgi_body({"wsgi.input": io.BytesIO(b"unbounded")}, 10) == b""


async def test_a_response_watch_adds_headers_and_sees_a_stream_end() -> None:
    sent: list[Message] = []
    sizes: list[int] = []

    async def send(message: Message) -> None:
        sent.append(message)

    watch = ResponseWatch(send, headers=[(b"x-a", b"1")], on_body=lambda _w, n: sizes.append(n))
    await watch.send({"type": "http.response.start", "status": 200, "headers": [(b"x-b", b"2")]})
    assert watch.started
    assert not watch.ended
    await watch.send({"type": "http.response.body", "body": b"abc", "more_body": True})
    await watch.send({"type": "http.response.body", "body": b"", "more_body": True})
    assert not watch.ended
    await watch.send({"type": "http.response.body", "body": b"de", "more_body": False})
    assert (watch.status, watch.ended, sizes) == (200, True, [3, 2])  # the empty message is not a chunk
    assert sent[0]["headers"] == [(b"x-b", b"2"), (b"x-a", b"1")]


async def test_a_response_cut_short_is_not_ended() -> None:
    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            raise OSError("client went away")

    watch = ResponseWatch(send)
    await watch.send({"type": "http.response.start", "status": 200, "headers": []})
    with pytest.raises(OSError):
        await watch.send({"type": "http.response.body", "body": b"x", "more_body": False})
    assert watch.started
    assert not watch.ended


def test_a_wsgi_watch_closes_once_after_the_body_and_sees_its_end() -> None:
    closes: list[tuple[int | None, bool, bool, list[int]]] = []
    sizes: list[int] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("201 Created", [("x-b", "2")])
        return [b"ab", b"", b"c"]

    started: list[Any] = []
    watch = WSGIResponseWatch(
        lambda status, headers: started.append((status, headers)),
        headers=[("x-a", "1")],
        on_close=lambda w: closes.append((w.status, w.ended, w.failed, list(sizes))),
        on_body=lambda _w, n: sizes.append(n),
    )
    body = watch.call(app, {})
    assert b"".join(body) == b"abc"
    assert not closes
    body.close()  # type: ignore[attr-defined]
    body.close()  # type: ignore[attr-defined]
    assert closes == [(201, True, False, [2, 1])]
    assert started[0][1] == [("x-b", "2"), ("x-a", "1")]


def test_a_wsgi_app_that_raises_closes_the_watch_as_failed() -> None:
    closes: list[bool] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        raise RuntimeError("boom")

    watch = WSGIResponseWatch(lambda *a: None, on_close=lambda w: closes.append(w.failed))
    with pytest.raises(RuntimeError):
        watch.call(app, {})
    assert closes == [True]


class _PooledServer(WSGIServer):
    """wsgiref with a pool of two reused threads (as gunicorn's gthread, waitress or cheroot serve)."""

    pool = ThreadPoolExecutor(max_workers=2)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.pool.submit(self._handle, request, client_address)

    def _handle(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        finally:
            self.shutdown_request(request)


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def test_a_threaded_wsgi_server_never_shows_a_request_another_requests_context_or_usage() -> None:
    """Each request binds its context and usage and resets them when the server closes its body; a request
    that binds nothing (a public path) must then see none, on whichever pooled thread it lands."""

    def middleware(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/public":
            ctx, usage = current_context(), current_usage()
            seen = {"ctx": None if ctx is None else str(ctx.tenant_id), "usage": usage is not None}
            body = json.dumps(seen).encode()
            start_response("200 OK", [("content-type", "application/json")])
            return [body]
        tenant = environ["QUERY_STRING"]
        token = bind_context_to_environ(environ, RequestContext(tenant_id=tenant))
        _, usage_token = bind_environ_usage(environ)

        def reset() -> None:
            reset_usage(usage_token)
            reset_current_context(token)

        report_usage(input_tokens=1)
        start_response("200 OK", [("content-type", "text/plain")])
        return closing([str(current_context().tenant_id).encode()], reset)  # type: ignore[union-attr]

    server = make_server("127.0.0.1", 0, middleware, server_class=_PooledServer, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            tenants = [uuid.uuid4() for _ in range(20)]
            for tenant in tenants:
                assert client.get(f"/private?{tenant}").text == str(tenant)
                assert client.get("/public").json() == {"ctx": None, "usage": False}
    finally:
        server.shutdown()
        server.server_close()
