"""Pure ASGI middleware: one SERVER span and the HTTP, GenAI and business metrics per request."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

from llmproxy.core import ASGIApp, Message, Receive, ResponseWatch, Scope, Send, bind_usage, reset_usage

from ._request import RequestRecorder
from ._semconv import DEFAULT_GENAI_ROUTES
from ._setup import Telemetry, get_telemetry

logger = logging.getLogger("llmproxy.observability")

#: A framework (or the app) may name the matched route template here when it is not Starlette's
#: ``scope["route"]`` (same key in a WSGI environ).
ROUTE_KEY = "llmproxy.route"
_PROPAGATION_HEADERS = {b"traceparent": "traceparent", b"tracestate": "tracestate", b"baggage": "baggage"}


def route_template(scope: Scope, root_path: str) -> str | None:
    """The matched route's template, read once the response has ended (routing happened inside).

    Starlette and FastAPI put the matched route in ``scope["route"]`` — in the same scope dict, which they
    update in place — with the template as ``route.path``; a mount's prefix is what ``root_path`` gained.
    """
    explicit = scope.get(ROUTE_KEY)
    if isinstance(explicit, str):
        return explicit
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    mounted = str(scope.get("root_path", ""))
    if len(mounted) > len(root_path) and mounted.startswith(root_path):
        return mounted[len(root_path) :] + path
    return path


class TelemetryMiddleware:
    """Trace and measure every HTTP request; put it outermost.

    - A SERVER span per request, child of the incoming W3C ``traceparent`` / ``tracestate``, named after
      the route template (``POST /v1/chat/completions``), with tenant, API key, user, request id and model
      from the request context, usage from the usage channel, and what auth and quota decided
      (``llmproxy.auth.outcome``, ``llmproxy.quota.*``: read off the context and ``x-ratelimit-*`` headers).
    - ``http.server.request.duration`` and ``http.server.active_requests``; for the paths in
      ``genai_routes`` (path -> ``gen_ai.operation.name``) the GenAI client metrics and the seed's
      ``llmproxy.*`` metrics too. A stream is measured to its last chunk or the client's disconnect.
    - With Prometheus enabled, ``metrics_path`` answers the exposition (untraced).
    """

    def __init__(
        self,
        app: ASGIApp,
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
        self.metrics_app = telemetry.metrics_app() if self.metrics_path else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.enabled:
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if path == self.metrics_path and self.metrics_app is not None:
            await self.metrics_app(scope, receive, send)
            return
        if path in self.excluded_paths:
            await self.app(scope, receive, send)
            return
        carrier: dict[str, str] | None = None
        user_agent: str | None = None
        for name, value in scope.get("headers") or ():
            if name == b"user-agent":
                user_agent = value.decode("latin-1")
            elif name in _PROPAGATION_HEADERS:
                if carrier is None:
                    carrier = {}
                carrier[_PROPAGATION_HEADERS[name]] = value.decode("latin-1")
        client = scope.get("client")
        query: bytes = scope.get("query_string") or b""
        usage, usage_token = bind_usage(scope)
        root_path = str(scope.get("root_path", ""))
        request = self.recorder.start(
            method=scope.get("method", "GET"),
            scheme=scope.get("scheme", "http"),
            path=path,
            query=query.decode("latin-1") if query else "",
            carrier=carrier,
            client_address=client[0] if client else None,
            user_agent=user_agent,
            protocol_version=scope.get("http_version"),
            source=scope,
            usage=usage,
        )

        async def watched_receive() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect":
                request.disconnected = True
            return message

        watch = ResponseWatch(send, on_body=request.on_body)
        failure: BaseException | None = None
        try:
            await self.app(scope, watched_receive, watch.send)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            try:
                request.finish(
                    route_template(scope, root_path),
                    failure,
                    status=watch.status,
                    headers=watch.response_headers,
                )
            except Exception:  # telemetry must never fail a request
                logger.exception("telemetry: recording the request failed")
            reset_usage(usage_token)
