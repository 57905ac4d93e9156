"""The Prometheus ``/metrics`` endpoint, as an ASGI app and a WSGI app (``prometheus_client`` exposition)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from llmproxy.core import ASGIApp, Receive, Scope, Send, StartResponse, WSGIApp, WSGIEnviron

if TYPE_CHECKING:
    from ._setup import Telemetry

_NOT_FOUND = (
    b'{"error": {"message": "metrics are not enabled", "type": "invalid_request_error", '
    b'"code": "not_found", "param": null}}'
)


def _exposition(telemetry: Telemetry, accept: str) -> tuple[bytes, str]:
    from prometheus_client.exposition import choose_encoder

    assert telemetry.prometheus_registry is not None
    encoder, content_type = choose_encoder(accept)
    return encoder(telemetry.prometheus_registry), content_type


def metrics_asgi_app(telemetry: Telemetry) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if telemetry.prometheus_registry is None:
            status, body, content_type = 404, _NOT_FOUND, "application/json"
        else:
            accept = ""
            for name, value in scope.get("headers") or ():
                if name == b"accept":
                    accept = value.decode("latin-1")
            body, content_type = _exposition(telemetry, accept)
            status = 200
        headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body if scope.get("method") != "HEAD" else b""})

    return app


def metrics_wsgi_app(telemetry: Telemetry) -> WSGIApp:
    def app(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        if telemetry.prometheus_registry is None:
            status, body, content_type = "404 Not Found", _NOT_FOUND, "application/json"
        else:
            body, content_type = _exposition(telemetry, environ.get("HTTP_ACCEPT", ""))
            status = "200 OK"
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body if environ.get("REQUEST_METHOD") != "HEAD" else b""]

    return app
