"""What one HTTP request records, whatever the adapter: the decisions the ASGI and WSGI middlewares share.

An adapter calls :meth:`RequestRecorder.start` with what the request says, watches the response with core's
``ResponseWatch`` / ``WSGIResponseWatch`` (whose ``on_body`` is :meth:`ServerRequest.on_body`), and calls
:meth:`ServerRequest.finish` once it has ended (after a stream's last chunk, or the disconnect).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from llmproxy.core import Usage, context_from_scope

from . import _semconv as sc
from ._decisions import decisions
from ._setup import Telemetry

Attributes = dict[str, Any]

#: The request being handled in this task/thread (read by ``annotate`` and by GenAI client calls).
current_request: contextvars.ContextVar[ServerRequest | None] = contextvars.ContextVar(
    "llmproxy_observability_request", default=None
)


#: A stream's chunk intervals are recorded in lots of this many (and the rest when it ends): a long stream's
#: time-per-chunk histogram lags at most this many chunks behind it.
CHUNK_BATCH = 32
#: Query parameters whose values never reach a span: the conventions' list of signed-URL secrets, and the
#: credentials LLM APIs accept in the query (``?key=`` for Gemini-style APIs).
SENSITIVE_QUERY_PARAMETERS = frozenset(
    {
        "AWSAccessKeyId",
        "Signature",
        "sig",
        "X-Goog-Signature",
        "key",
        "api_key",
        "api-key",
        "access_token",
        "token",
    }
)


def redact_query(query: str) -> str:
    """``url.query`` with the values of sensitive parameters replaced by ``REDACTED``."""
    parts = query.split("&")
    for index, part in enumerate(parts):
        name, sep, _ = part.partition("=")
        if sep and name in SENSITIVE_QUERY_PARAMETERS:
            parts[index] = f"{name}=REDACTED"
    return "&".join(parts)


def error_type_of(exc: BaseException) -> str:
    """The conventions' ``error.type`` of an exception: its fully qualified class name."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


class RequestRecorder:
    """Per middleware: the telemetry handle and the options, precomputed once."""

    def __init__(
        self,
        telemetry: Telemetry,
        *,
        genai_routes: Mapping[str, str],
        provider_name: str,
    ) -> None:
        self.telemetry = telemetry
        self.tracer = telemetry.tracer
        self.instruments = telemetry.instruments
        self.genai_routes = dict(genai_routes)
        self.provider_name = provider_name
        self.propagator = propagate.get_global_textmap()

    def start(
        self,
        *,
        method: str,
        scheme: str,
        path: str,
        query: str,
        carrier: Mapping[str, str] | None,
        client_address: str | None,
        user_agent: str | None,
        protocol_version: str | None,
        source: Mapping[str, Any],
        usage: Usage,
    ) -> ServerRequest:
        """Open the SERVER span (child of an incoming ``traceparent``) and count the request as active."""
        if method not in sc.KNOWN_METHODS:
            original, method = method, sc.OTHER_VALUE
        else:
            original = None
        attributes: Attributes = {
            sc.HTTP_REQUEST_METHOD: method,
            sc.URL_SCHEME: scheme,
            sc.URL_PATH: path,
        }
        if original is not None:
            attributes[sc.HTTP_REQUEST_METHOD_ORIGINAL] = original
        if query:
            attributes[sc.URL_QUERY] = redact_query(query)
        if client_address:
            attributes[sc.CLIENT_ADDRESS] = client_address
        if user_agent:
            attributes[sc.USER_AGENT] = user_agent
        if protocol_version:
            attributes[sc.NETWORK_PROTOCOL_VERSION] = protocol_version
        operation = self.genai_routes.get(path)
        if operation is not None:
            attributes[sc.GEN_AI_OPERATION_NAME] = operation
        parent = self.propagator.extract(carrier) if carrier else None
        span = self.tracer.start_span(
            method if method != sc.OTHER_VALUE else "HTTP",
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
        )
        request = ServerRequest(self, span, method, scheme, protocol_version, operation, source, usage)
        request.otel_token = otel_context.attach(trace.set_span_in_context(span, parent))
        request.request_token = current_request.set(request)
        self.instruments.http.active.add_key(request.active_key, 1)
        if operation is not None:
            self.instruments.llmproxy.connection_opened()
        return request


class ServerRequest:
    """The state of one request's telemetry (one per request, never shared)."""

    __slots__ = (
        "active_attributes",
        "active_key",
        "chunk_attributes",
        "chunk_intervals",
        "disconnected",
        "first_chunk",
        "genai_by_client",
        "last_chunk",
        "method",
        "operation",
        "otel_token",
        "protocol_version",
        "provider",
        "recorder",
        "request_token",
        "response_model",
        "source",
        "span",
        "started_at",
        "status",
        "streaming",
        "usage",
    )

    def __init__(
        self,
        recorder: RequestRecorder,
        span: trace.Span,
        method: str,
        scheme: str,
        protocol_version: str | None,
        operation: str | None,
        source: Mapping[str, Any],
        usage: Usage,
    ) -> None:
        self.recorder = recorder
        self.span = span
        self.method = method
        self.protocol_version = protocol_version
        self.operation = operation
        self.source = source
        self.usage = usage
        self.active_attributes: Attributes = {sc.HTTP_REQUEST_METHOD: method, sc.URL_SCHEME: scheme}
        self.active_key = ((sc.HTTP_REQUEST_METHOD, method), (sc.URL_SCHEME, scheme))
        self.status = 0
        self.last_chunk: float | None = None
        self.first_chunk = 0.0
        self.streaming = False
        self.chunk_attributes: Attributes | None = None
        self.chunk_intervals: list[float] = []
        self.disconnected = False
        #: Set by a GenAI client call made while handling this request: it records the GenAI metrics
        #: itself, with the upstream's own timing, so the middleware does not record them twice.
        self.genai_by_client = False
        self.provider: str | None = None
        self.response_model: str | None = None
        self.otel_token: object = None
        self.request_token: contextvars.Token[ServerRequest | None] | None = None
        self.started_at = time.perf_counter()

    def on_body(self, _watch: object, _size: int) -> None:
        """A non-empty part of the response body is going out (core's ``ResponseWatch`` callback).

        The first part is timed; a second one makes the response a stream — time to first chunk is then
        recorded for the first, and each later part records its interval (N-1 for N parts).
        """
        now = time.perf_counter()
        last = self.last_chunk
        self.last_chunk = now
        if self.operation is None or self.genai_by_client:
            return
        if last is None:
            self.first_chunk = now
            return
        if not self.streaming:
            self._begin_stream()
        intervals = self.chunk_intervals
        intervals.append(now - last)
        if len(intervals) >= CHUNK_BATCH:
            self._record_chunks()

    def _record_chunks(self) -> None:
        """Record the intervals gathered since the last time (every ``CHUNK_BATCH`` chunks, and at the end):
        one handle lookup for the lot instead of one per chunk."""
        if self.chunk_intervals:
            assert self.chunk_attributes is not None
            intervals, self.chunk_intervals = self.chunk_intervals, []
            histogram = self.recorder.instruments.genai.time_per_output_chunk
            histogram.record_many(intervals, self.chunk_attributes)

    def _begin_stream(self) -> None:
        self.streaming = True
        self.chunk_attributes = self._genai_attributes()
        self.recorder.instruments.genai.time_to_first_chunk.record(
            self.first_chunk - self.started_at, self.chunk_attributes
        )

    def _model(self) -> str | None:
        if self.usage.model:
            return self.usage.model
        ctx = context_from_scope(self.source)  # type: ignore[arg-type]
        return ctx.model if ctx is not None else None

    def _genai_attributes(self) -> Attributes:
        assert self.operation is not None
        return self.recorder.instruments.genai.attributes(
            self.operation, self.provider or self.recorder.provider_name, self._model(), self.response_model
        )

    def finish(
        self,
        route: str | None,
        exc: BaseException | None = None,
        *,
        status: int | None = None,
        failed: bool = False,
        headers: Sequence[tuple[bytes, bytes]] | Sequence[tuple[str, str]] = (),
    ) -> None:
        """Close the span and record the request's metrics. Call once, when the response has ended.

        ``status`` is the response's (None: not started); ``failed`` marks a failure whose exception is gone
        (a WSGI body that raised while the server iterated it); ``headers`` are the response's (what auth
        and quota decided is read off them and the context: ``_decisions.py``)."""
        duration = time.perf_counter() - self.started_at
        self._record_chunks()
        if status is not None:
            self.status = status
        recorder = self.recorder
        instruments = recorder.instruments
        span = self.span
        status = self.status or (500 if exc is not None else 0)
        error_type: str | None = None
        if exc is not None:
            error_type = error_type_of(exc)
        elif failed:
            error_type = sc.OTHER_VALUE
        elif status >= 500:
            error_type = str(status)

        http_attributes: Attributes = dict(self.active_attributes)
        span_attributes: Attributes = {}
        if status:
            http_attributes[sc.HTTP_RESPONSE_STATUS_CODE] = status
            span_attributes[sc.HTTP_RESPONSE_STATUS_CODE] = status
        if self.protocol_version:
            http_attributes[sc.NETWORK_PROTOCOL_VERSION] = self.protocol_version
        if route:
            span_attributes[sc.HTTP_ROUTE] = route
            http_attributes[sc.HTTP_ROUTE] = instruments.http.route(route)
            span.update_name(f"{self.method if self.method != sc.OTHER_VALUE else 'HTTP'} {route}")
        if error_type is not None:
            span_attributes[sc.ERROR_TYPE] = error_type
            http_attributes[sc.ERROR_TYPE] = instruments.http.error_type(error_type)
        if self.disconnected:
            span_attributes[sc.LLMPROXY_CLIENT_DISCONNECTED] = True
        ctx = context_from_scope(self.source)  # type: ignore[arg-type]
        span_attributes.update(decisions(ctx, status, headers))
        if ctx is not None:
            span_attributes[sc.LLMPROXY_REQUEST_ID] = ctx.request_id
            if ctx.tenant_id is not None:
                span_attributes[sc.LLMPROXY_TENANT_ID] = str(ctx.tenant_id)
            if ctx.api_key_id is not None:
                span_attributes[sc.LLMPROXY_API_KEY_ID] = ctx.api_key_id
            if ctx.user_id is not None:
                span_attributes[sc.LLMPROXY_USER_ID] = ctx.user_id
        usage = self.usage
        model = self._model()
        if model:
            span_attributes[sc.GEN_AI_REQUEST_MODEL] = model
        if usage.reported:
            span_attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] = usage.input_tokens
            span_attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = usage.output_tokens
        span.set_attributes(span_attributes)
        if exc is not None:
            span.record_exception(exc)
        if error_type is not None:
            span.set_status(Status(StatusCode.ERROR, error_type))
        span.end()

        instruments.http.duration.record(duration, http_attributes)
        instruments.http.active.add_key(self.active_key, -1)
        if self.operation is not None:
            provider = self.provider or recorder.provider_name
            if not self.genai_by_client:
                genai = instruments.genai
                attributes = self.chunk_attributes or self._genai_attributes()
                if error_type is not None:
                    attributes = {**attributes, sc.ERROR_TYPE: genai.error_type(error_type)}
                genai.duration.record(duration, attributes)
                if usage.reported:
                    genai.record_usage(attributes, usage.input_tokens, usage.output_tokens)
            failed = exc is not None or status >= 400 or status == 0
            metrics = instruments.llmproxy
            metrics.record_request(
                ctx.tenant_id if ctx is not None else None,
                model,
                provider,
                usage.input_tokens,
                usage.output_tokens,
                duration,
                not failed,
                error_type=error_type or (str(status) if status else None),
                api_key_id=ctx.api_key_id if ctx is not None else None,
                user_id=ctx.user_id if ctx is not None else None,
            )
            metrics.connection_closed()
        self._detach()

    def _detach(self) -> None:
        token, self.request_token = self.request_token, None
        if token is not None:
            try:
                current_request.reset(token)
            except ValueError:  # finished from another context (a WSGI server closing on another thread)
                current_request.set(None)
        otel_token, self.otel_token = self.otel_token, None
        if otel_token is not None:
            otel_context.detach(otel_token)  # type: ignore[arg-type]
