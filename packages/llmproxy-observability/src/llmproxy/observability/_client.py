"""A CLIENT span per upstream LLM call, with the GenAI attributes, usage and metrics, and the trace context
to inject into the upstream request."""

from __future__ import annotations

import time
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import _semconv as sc
from ._request import current_request, error_type_of
from ._setup import Telemetry, get_telemetry


class GenAIClientCall:
    """One call to an LLM provider, as :func:`genai_call` opens it.

    The span is not made current (a streamed call lives in an async generator, which may be closed from
    another task), so child spans are not expected; :meth:`inject` puts its context in the headers.
    """

    def __init__(
        self,
        telemetry: Telemetry,
        *,
        operation: str,
        provider: str,
        request_model: str | None,
        server_address: str | None,
        server_port: int | None,
        stream: bool,
        max_tokens: int | None,
    ) -> None:
        self._telemetry = telemetry
        self.operation = operation
        self.provider = provider
        self.request_model = request_model
        self.server = (server_address, server_port) if server_address else None
        self.stream = stream
        self.response_model: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.error_type: str | None = None
        self._chunk_attributes: dict[str, Any] | None = None
        self._last_chunk: float | None = None
        attributes: dict[str, Any] = {
            sc.GEN_AI_OPERATION_NAME: operation,
            sc.GEN_AI_PROVIDER_NAME: provider,
        }
        if request_model:
            attributes[sc.GEN_AI_REQUEST_MODEL] = request_model
        if server_address:
            attributes[sc.SERVER_ADDRESS] = server_address
            if server_port is not None:
                attributes[sc.SERVER_PORT] = server_port
        if max_tokens is not None:
            attributes[sc.GEN_AI_REQUEST_MAX_TOKENS] = max_tokens
        if stream:
            attributes[sc.GEN_AI_REQUEST_STREAM] = True
        name = f"{operation} {request_model}" if request_model else operation
        self.span = telemetry.tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
        self._started = time.perf_counter()
        request = current_request.get()
        if request is not None:
            # This call records the GenAI metrics with the upstream's timing; the request must not again.
            request.genai_by_client = True
            request.provider = provider

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Add ``traceparent`` (and ``tracestate`` / ``baggage``) naming this call's span to ``headers``."""
        propagate.inject(headers, context=trace.set_span_in_context(self.span))

    def _attributes(self) -> dict[str, Any]:
        return self._telemetry.instruments.genai.attributes(
            self.operation, self.provider, self.request_model, self.response_model, self.server
        )

    def chunk(self) -> None:
        """A streamed chunk arrived: the first records time-to-first-chunk, each later one its interval."""
        now = time.perf_counter()
        genai = self._telemetry.instruments.genai
        if self._last_chunk is None:
            self._chunk_attributes = self._attributes()
            genai.time_to_first_chunk.record(now - self._started, self._chunk_attributes)
        else:
            assert self._chunk_attributes is not None
            genai.time_per_output_chunk.record(now - self._last_chunk, self._chunk_attributes)
        self._last_chunk = now

    def response(
        self,
        *,
        model: str | None = None,
        response_id: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        finish_reasons: Sequence[str] | None = None,
    ) -> None:
        """What the provider answered: response model and id, usage, finish reasons (each optional)."""
        attributes: dict[str, Any] = {}
        if model:
            self.response_model = model
            attributes[sc.GEN_AI_RESPONSE_MODEL] = model
            request = current_request.get()
            if request is not None:
                request.response_model = model
        if response_id:
            attributes[sc.GEN_AI_RESPONSE_ID] = response_id
        if input_tokens is not None:
            self.input_tokens = input_tokens
            attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] = input_tokens
        if output_tokens is not None:
            self.output_tokens = output_tokens
            attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = output_tokens
        if finish_reasons:
            attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] = list(finish_reasons)
        self.span.set_attributes(attributes)

    def fail(self, error_type: str) -> None:
        """The call failed with ``error_type`` (a provider's error code, an HTTP status, a timeout...)."""
        self.error_type = error_type

    def end(self, exc: BaseException | None = None) -> None:
        duration = time.perf_counter() - self._started
        if exc is not None and self.error_type is None:
            self.error_type = error_type_of(exc)
        genai = self._telemetry.instruments.genai
        attributes = self._attributes()
        if self.error_type is not None:
            self.span.set_attribute(sc.ERROR_TYPE, self.error_type)
            self.span.set_status(Status(StatusCode.ERROR, self.error_type))
            attributes[sc.ERROR_TYPE] = genai.error_type(self.error_type)
        if exc is not None:
            self.span.record_exception(exc)
        genai.duration.record(duration, attributes)
        if self.input_tokens is not None or self.output_tokens is not None:
            genai.record_usage(attributes, self.input_tokens or 0, self.output_tokens or 0)
        self.span.end()


class _NoCall(GenAIClientCall):
    """What :func:`genai_call` yields when telemetry is not configured or disabled: does nothing."""

    def __init__(self) -> None:  # no span, no instruments
        pass

    def inject(self, headers: MutableMapping[str, str]) -> None:
        pass

    def chunk(self) -> None:
        pass

    def response(self, **_: Any) -> None:
        pass

    def fail(self, error_type: str) -> None:
        pass

    def end(self, exc: BaseException | None = None) -> None:
        pass


@contextmanager
def genai_call(
    operation: str,
    *,
    provider: str,
    request_model: str | None = None,
    server_address: str | None = None,
    server_port: int | None = None,
    stream: bool = False,
    max_tokens: int | None = None,
    telemetry: Telemetry | None = None,
) -> Iterator[GenAIClientCall]:
    """Trace one upstream LLM call: ``with genai_call("chat", provider="openai", request_model=m) as call:``.

    Inside, ``call.inject(headers)`` before sending, ``call.chunk()`` per streamed chunk, and
    ``call.response(model=..., input_tokens=..., output_tokens=...)`` when the provider says; leaving the
    block ends the span and records ``gen_ai.client.operation.duration`` and ``gen_ai.client.token.usage``
    (an escaping exception sets ``error.type``).
    """
    telemetry = telemetry or get_telemetry()
    if telemetry is None or not telemetry.enabled:
        yield _NoCall()
        return
    call = GenAIClientCall(
        telemetry,
        operation=operation,
        provider=provider,
        request_model=request_model,
        server_address=server_address,
        server_port=server_port,
        stream=stream,
        max_tokens=max_tokens,
    )
    try:
        yield call
    except BaseException as exc:
        call.end(exc)
        raise
    call.end()
