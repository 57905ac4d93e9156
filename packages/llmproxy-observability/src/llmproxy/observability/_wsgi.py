"""The WSGI twin of :class:`TelemetryMiddleware` (same decisions, in ``_request.py``)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Collection, Iterable, Mapping

from llmproxy.core import (
    StartResponse,
    WSGIApp,
    WSGIEnviron,
    WSGIResponseWatch,
    bind_environ_usage,
    reset_usage,
)

from ._asgi import ROUTE_KEY
from ._request import RequestRecorder
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
        usage, token = bind_environ_usage(environ)
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

        def ended(watch: WSGIResponseWatch) -> None:
            # Runs when the server closes the body, or at once when the app raised (then inside its except
            # block: the exception is still the one being handled).
            failure = sys.exc_info()[1]
            try:
                request.finish(
                    _route(environ),
                    failure,
                    status=watch.status,
                    failed=watch.failed,
                    headers=watch.response_headers,
                )
            except Exception:
                logger.exception("telemetry: recording the request failed")
            finally:
                reset_usage(token)

        watch = WSGIResponseWatch(start_response, on_body=request.on_body, on_close=ended)
        return watch.call(self.app, environ)
