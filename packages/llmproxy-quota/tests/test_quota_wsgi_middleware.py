"""QuotaWSGIMiddleware: the same decisions as the ASGI middleware, through a WSGI adapter."""

from __future__ import annotations

import io
import itertools
import json
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from llmproxy.core import RequestContext, bind_context_to_environ, report_usage
from llmproxy.quota import QuotaClient, QuotaWSGIMiddleware


def estimate(environ: dict[str, Any], body: bytes) -> int:
    return int(json.loads(body)["max_tokens"])


def run(
    app: Any,
    tenant: uuid.UUID | None,
    body: bytes,
    *,
    read_chunks: int | None = None,
    environ_extra: dict[str, Any] | None = None,
) -> tuple[str, dict[str, str], bytes]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/v1/chat/completions", "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }  # fmt: skip
    if environ_extra is not None:
        environ.update(environ_extra)
        if environ_extra.get("CONTENT_LENGTH", "") is None:
            del environ["CONTENT_LENGTH"]
    if tenant is not None:
        bind_context_to_environ(
            environ, RequestContext(tenant_id=str(tenant), endpoint="/v1/chat/completions")
        )
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append((status, dict(headers)))
        return lambda data: None

    result = app(environ, start_response)
    out: list[bytes] = []
    try:
        # a client gone after ``read_chunks``: the server stops iterating and closes the iterable
        out.extend(itertools.islice(result, read_chunks))
    finally:
        close = getattr(result, "close", None)
        if close:
            close()
    status, headers = started[0]
    return status, headers, b"".join(out)


def streaming_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    assert json.loads(environ["wsgi.input"].read())["max_tokens"] > 0  # the body was re-fed

    def chunks() -> Iterator[bytes]:
        for i in range(1, 5):
            report_usage(input_tokens=10, output_tokens=5 * i, final=False)
            yield b"chunk"
        report_usage(input_tokens=10, output_tokens=20)

    start_response("200 OK", [("content-type", "text/event-stream")])
    return chunks()


@pytest.fixture
def app(client: QuotaClient) -> QuotaWSGIMiddleware:
    return QuotaWSGIMiddleware(streaming_app, client=client, estimate_tokens=estimate)


def test_admitted_responses_carry_rate_limit_headers(app: Any, tenant: uuid.UUID) -> None:
    status, headers, body = run(app, tenant, b'{"max_tokens": 100}')
    assert status == "200 OK"
    assert body == b"chunk" * 4
    assert headers["x-ratelimit-remaining-requests"] == "999"
    assert headers["x-ratelimit-remaining-tokens"] == "99900"


def test_the_stream_settles_at_its_end(app: Any, client: QuotaClient, tenant: uuid.UUID) -> None:
    run(app, tenant, b'{"max_tokens": 100}')
    assert client.check(tenant, "tokens_per_day", 0).current_usage == 30


def test_a_client_gone_mid_stream_settles_what_was_reported(
    app: Any, client: QuotaClient, tenant: uuid.UUID
) -> None:
    run(app, tenant, b'{"max_tokens": 100}', read_chunks=2)
    assert client.check(tenant, "tokens_per_day", 0).current_usage == 20


def test_rejections_are_429_with_openai_error_and_retry_after(
    app: Any, limits: Any, tenant: uuid.UUID
) -> None:
    limits.configure(tpm=50)
    status, headers, body = run(app, tenant, b'{"max_tokens": 40}')
    assert status == "200 OK"
    status, headers, body = run(app, tenant, b'{"max_tokens": 40}')
    assert status == "429 Too Many Requests"
    assert json.loads(body)["error"]["type"] == "rate_limit_exceeded"
    assert int(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-limit-tokens"] == "50"


def test_no_tenant_passes_through(app: Any) -> None:
    status, headers, _ = run(app, None, b'{"max_tokens": 1}')
    assert status == "200 OK"
    assert "x-ratelimit-limit-requests" not in headers


def test_no_tenant_gets_401_when_required(client: QuotaClient) -> None:
    app = QuotaWSGIMiddleware(streaming_app, client=client, require_tenant=True)
    status, _, body = run(app, None, b"{}")
    assert status == "401 Unauthorized"
    assert json.loads(body)["error"]["code"] == "missing_tenant"


def test_a_chunked_body_without_content_length_is_read_to_its_end(
    app: Any, client: QuotaClient, tenant: uuid.UUID
) -> None:
    # wsgi.input_terminated: the server has de-chunked the body and the input ends where it does
    status, headers, _ = run(
        app,
        tenant,
        b'{"max_tokens": 100}',
        environ_extra={"CONTENT_LENGTH": None, "wsgi.input_terminated": True},
    )
    assert status == "200 OK"  # streaming_app asserts it received the body
    assert headers["x-ratelimit-remaining-tokens"] == "99900"  # the estimate came from the body


def test_a_chunked_body_over_max_body_bytes_is_413(client: QuotaClient, tenant: uuid.UUID) -> None:
    app = QuotaWSGIMiddleware(streaming_app, client=client, estimate_tokens=estimate, max_body_bytes=10)
    status, _, body = run(
        app,
        tenant,
        b'{"max_tokens": 100}',
        environ_extra={"CONTENT_LENGTH": "", "wsgi.input_terminated": True},
    )
    assert status.startswith("413 ")  # (the reason phrase is http.HTTPStatus's: it differs by Python version)
    assert json.loads(body)["error"]["code"] == "request_too_large"


def test_no_content_length_and_no_terminated_input_is_an_empty_body(
    client: QuotaClient, tenant: uuid.UUID
) -> None:
    seen: list[bytes] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seen.append(environ["wsgi.input"].read())
        start_response("200 OK", [])
        return [b"ok"]

    mw = QuotaWSGIMiddleware(app, client=client, estimate_tokens=lambda env, body: len(body))
    status, headers, _ = run(mw, tenant, b"unbounded", environ_extra={"CONTENT_LENGTH": None})
    assert status == "200 OK"
    assert seen == [b""]  # PEP 3333: without a length the input must not be read
    assert headers["x-ratelimit-remaining-tokens"] == "100000"


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "+3", "0x10"])
def test_an_invalid_content_length_is_400_naming_the_header(
    client: QuotaClient, tenant: uuid.UUID, value: str
) -> None:
    app = QuotaWSGIMiddleware(streaming_app, client=client, estimate_tokens=estimate, max_body_bytes=10)
    status, _, body = run(app, tenant, b"x" * 100_000, environ_extra={"CONTENT_LENGTH": value})
    assert status == "400 Bad Request"
    err = json.loads(body)["error"]
    assert (err["code"], err["param"]) == ("invalid_content_length", "Content-Length")
    assert "Content-Length" in err["message"]
