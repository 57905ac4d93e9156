"""The WSGI twin of :class:`TelemetryMiddleware` (same decisions, in ``_request.py``)."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any

from llmproxy.core import StartResponse, WSGIApp, WSGIEnviron, open_environ_usage, reset_usage, use_usage

from ._asgi import ROUTE_KEY
from ._request import RequestRecorder, ServerRequest
from ._semconv import DEFAULT_GENAI_ROUTES
from ._setup import Telemetry, get_telemetry

logger = logging.getLogger("llmproxy.observability")
_PROPAGATION_KEYS = {
    "HTTP_TRACEPARENT": "traceparent",
    "HTTP_TRACESTATE": "tracestate",
    "HTTP_BAGGAGE": "baggage",
}


def _route(environ: WSGIEnviron) -> str | None:
    route = environ.get(ROUTE_KEY)
    return route if isinstance(route, str) else None


class _Body:
    """The app's response body, watched: each chunk is timed, and closing it ends the request's telemetry."""

    def __init__(
        self, body: Iterable[bytes], request: ServerRequest, environ: WSGIEnviron, token: Any
    ) -> None:
        self._body = body
        self._request: ServerRequest | None = request
        self._environ = environ
        self._token = token
        self._failure: BaseException | None = None

    def __iter__(self) -> Iterator[bytes]:
        request = self._request
        try:
            for chunk in self._body:
                if chunk and request is not None:
                    request.body_chunk(None)
                yield chunk
        except BaseException as exc:
            self._failure = exc
            raise

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._end()

    def _end(self) -> None:
        request, self._request = self._request, None
        if request is None:
            return
        try:
            request.finish(_route(self._environ), self._failure)
        except Exception:
            logger.exception("telemetry: recording the request failed")
        try:
            reset_usage(self._token)
        except ValueError:  # closed on another thread than the one that called the app
            pass


class TelemetryWSGIMiddleware:
    """Trace and measure every WSGI request; see :class:`TelemetryMiddleware` for what is recorded.

    The request ends when the server closes the response body (WSGI's ``close()``), so a streamed body is
    measured to its last chunk. The route template comes from ``environ["llmproxy.route"]`` when the app
    or framework sets it.
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        telemetry: Telemetry | None = None,
        genai_routes: Mapping[str, str] = DEFAULT_GENAI_ROUTES,
        provider_name: str = "openai",
        excluded_paths: Collection[str] = (),
        metrics_path: str | None = "/metrics",
    ) -> None:
        telemetry = telemetry or get_telemetry()
        if telemetry is None:
            raise ValueError("telemetry: pass telemetry=configure_telemetry(...) or configure it first")
        if not provider_name:
            raise ValueError("provider_name must not be empty")
        self.app = app
        self.telemetry = telemetry
        self.enabled = telemetry.enabled
        self.recorder = RequestRecorder(telemetry, genai_routes=genai_routes, provider_name=provider_name)
        self.excluded_paths = frozenset(excluded_paths)
        self.metrics_path = metrics_path if telemetry.prometheus else None
        self.metrics_app = telemetry.metrics_wsgi_app() if self.metrics_path else None

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        if not self.enabled:
            return self.app(environ, start_response)
        path: str = environ.get("PATH_INFO") or "/"
        if path == self.metrics_path and self.metrics_app is not None:
            return self.metrics_app(environ, start_response)
        if path in self.excluded_paths:
            return self.app(environ, start_response)
        carrier = {name: environ[key] for key, name in _PROPAGATION_KEYS.items() if key in environ} or None
        protocol = str(environ.get("SERVER_PROTOCOL", ""))
        token = use_usage(None)
        usage = open_environ_usage(environ)
        request = self.recorder.start(
            method=environ.get("REQUEST_METHOD", "GET"),
            scheme=environ.get("wsgi.url_scheme", "http"),
            path=path,
            query=environ.get("QUERY_STRING", ""),
            carrier=carrier,
            client_address=environ.get("REMOTE_ADDR"),
            user_agent=environ.get("HTTP_USER_AGENT"),
            protocol_version=protocol.partition("/")[2] or None,
            source=environ,
            usage=usage,
        )

        def watched_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            try:
                request.response_started(int(status[:3]))
            except ValueError:
                pass
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, watched_start_response)
        except BaseException as exc:
            try:
                request.finish(_route(environ), exc)
            finally:
                reset_usage(token)
            raise
        return _Body(body, request, environ, token)
