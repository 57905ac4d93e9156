"""The instruments: HTTP server, GenAI client and the seed's business metrics, with bounded labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.metrics import Counter, Meter

from . import _semconv as sc
from ._cardinality import BoundedValues
from ._histograms import Histogram
from ._options import CardinalityOptions
from ._sums import SharedLock, Sums

Attributes = dict[str, Any]
_INPUT = (sc.GEN_AI_TOKEN_TYPE, "input")
_OUTPUT = (sc.GEN_AI_TOKEN_TYPE, "output")


def _histogram(meter: Meter, name: str, unit: str, description: str, buckets: Sequence[float]) -> Histogram:
    return Histogram(
        meter.create_histogram(
            name, unit=unit, description=description, explicit_bucket_boundaries_advisory=buckets
        )
    )


class _Labels:
    """The bounded label values of one metric group (instruments recorded together share one tally)."""

    def __init__(self, group: str, options: CardinalityOptions, overflow: Counter) -> None:
        self.group = group
        self.options = options
        self.overflow = overflow

    def bounded(self, attribute: str, *, known: frozenset[str] | None = None) -> BoundedValues:
        tags = {sc.LLMPROXY_METRIC: self.group, sc.LLMPROXY_ATTRIBUTE: attribute}
        overflow = self.overflow

        def counted() -> None:
            overflow.add(1, tags)

        return BoundedValues(self.options.max_values, known=known, on_overflow=counted)


class HttpServerMetrics:
    """``http.server.request.duration`` and ``http.server.active_requests`` (stable HTTP conventions)."""

    def __init__(self, meter: Meter, labels: _Labels) -> None:
        self.duration = _histogram(
            meter,
            sc.HTTP_SERVER_REQUEST_DURATION,
            "s",
            "Duration of HTTP server requests.",
            sc.HTTP_DURATION_BUCKETS,
        )
        self.active = Sums()
        meter.create_observable_up_down_counter(
            sc.HTTP_SERVER_ACTIVE_REQUESTS,
            callbacks=[self.active.observe],
            unit="{request}",
            description="Number of active HTTP server requests.",
        )
        self.route = labels.bounded(sc.HTTP_ROUTE)
        self.error_type = labels.bounded(sc.ERROR_TYPE)


class GenAIMetrics:
    """The GenAI client metrics: token usage, operation duration, time to first chunk, time per chunk."""

    def __init__(self, meter: Meter, labels: _Labels) -> None:
        self.token_usage = _histogram(
            meter,
            sc.GEN_AI_CLIENT_TOKEN_USAGE,
            "{token}",
            "Number of input and output tokens used.",
            sc.GEN_AI_TOKEN_BUCKETS,
        )
        self.duration = _histogram(
            meter,
            sc.GEN_AI_CLIENT_OPERATION_DURATION,
            "s",
            "GenAI operation duration.",
            sc.GEN_AI_DURATION_BUCKETS,
        )
        self.time_to_first_chunk = _histogram(
            meter,
            sc.GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK,
            "s",
            "Time to receive the first chunk of a streamed response.",
            sc.GEN_AI_DURATION_BUCKETS,
        )
        self.time_per_output_chunk = _histogram(
            meter,
            sc.GEN_AI_CLIENT_TIME_PER_OUTPUT_CHUNK,
            "s",
            "Time between consecutive chunks of a streamed response, after the first.",
            sc.GEN_AI_DURATION_BUCKETS,
        )
        known = labels.options.known_models
        self.request_model = labels.bounded(sc.GEN_AI_REQUEST_MODEL, known=known)
        self.response_model = labels.bounded(sc.GEN_AI_RESPONSE_MODEL)
        self.provider = labels.bounded(sc.GEN_AI_PROVIDER_NAME)
        self.error_type = labels.bounded(sc.ERROR_TYPE)

    def attributes(
        self,
        operation: str,
        provider: str,
        request_model: str | None,
        response_model: str | None = None,
        server: tuple[str, int | None] | None = None,
    ) -> Attributes:
        attributes: Attributes = {
            sc.GEN_AI_OPERATION_NAME: operation,
            sc.GEN_AI_PROVIDER_NAME: self.provider(provider),
        }
        if request_model:
            attributes[sc.GEN_AI_REQUEST_MODEL] = self.request_model(request_model)
        if response_model:
            attributes[sc.GEN_AI_RESPONSE_MODEL] = self.response_model(response_model)
        if server is not None:
            attributes[sc.SERVER_ADDRESS] = server[0]
            if server[1] is not None:
                attributes[sc.SERVER_PORT] = server[1]
        return attributes

    def record_usage(self, attributes: Mapping[str, Any], input_tokens: int, output_tokens: int) -> None:
        self.token_usage.record(input_tokens, {**attributes, sc.GEN_AI_TOKEN_TYPE: "input"})
        self.token_usage.record(output_tokens, {**attributes, sc.GEN_AI_TOKEN_TYPE: "output"})


class LlmProxyMetrics:
    """The seed's business instruments, with OTel names (no ``.total`` suffix: Prometheus adds it).

    ``record_request`` is the seed's call; the middleware makes it for every GenAI request it sees, and
    worker loops call it themselves. Tenant, API key and user become labels only when listed in
    :attr:`CardinalityOptions.identity_labels`.
    """

    def __init__(self, meter: Meter, labels: _Labels) -> None:
        # One lock for the three counters record_request updates together.
        lock = SharedLock()
        self.requests = Sums(lock)
        meter.create_observable_counter(
            sc.LLMPROXY_REQUESTS,
            callbacks=[self.requests.observe],
            unit="{request}",
            description="LLM requests processed.",
        )
        self.tokens_processed = Sums(lock)
        meter.create_observable_counter(
            sc.LLMPROXY_TOKENS_PROCESSED,
            callbacks=[self.tokens_processed.observe],
            unit="{token}",
            description="Tokens processed (input and output).",
        )
        self.errors = Sums(lock)
        meter.create_observable_counter(
            sc.LLMPROXY_ERRORS,
            callbacks=[self.errors.observe],
            unit="{error}",
            description="LLM requests that failed.",
        )
        self.request_duration = _histogram(
            meter, sc.LLMPROXY_REQUEST_DURATION, "s", "Duration of LLM requests.", sc.GEN_AI_DURATION_BUCKETS
        )
        self.tokens_per_request = _histogram(
            meter,
            sc.LLMPROXY_TOKENS_PER_REQUEST,
            "{token}",
            "Tokens (input + output) per LLM request.",
            sc.GEN_AI_TOKEN_BUCKETS,
        )
        self.active_connections = Sums()
        meter.create_observable_up_down_counter(
            sc.LLMPROXY_ACTIVE_CONNECTIONS,
            callbacks=[self.active_connections.observe],
            unit="{connection}",
            description="LLM requests in flight.",
        )
        options = labels.options
        self.model = labels.bounded(sc.GEN_AI_REQUEST_MODEL, known=options.known_models)
        self.provider = labels.bounded(sc.GEN_AI_PROVIDER_NAME)
        self.error_type = labels.bounded(sc.ERROR_TYPE)
        identity = options.identity_labels
        self.tenant = labels.bounded(sc.LLMPROXY_TENANT_ID) if "tenant" in identity else None
        self.api_key = labels.bounded(sc.LLMPROXY_API_KEY_ID) if "api_key" in identity else None
        self.user = labels.bounded(sc.LLMPROXY_USER_ID) if "user" in identity else None

    def record_request(
        self,
        tenant_id: object | None,
        model: str | None,
        provider: str | None,
        input_tokens: int,
        output_tokens: int,
        duration: float,
        success: bool,
        *,
        error_type: str | None = None,
        api_key_id: str | None = None,
        user_id: str | None = None,
    ) -> None:
        """Record one finished LLM request: ``duration`` in seconds, tokens as the provider counted them."""
        attributes: Attributes = {sc.LLMPROXY_STATUS: "success" if success else "error"}
        if model:
            attributes[sc.GEN_AI_REQUEST_MODEL] = self.model(model)
        if provider:
            attributes[sc.GEN_AI_PROVIDER_NAME] = self.provider(provider)
        if self.tenant is not None and tenant_id is not None:
            attributes[sc.LLMPROXY_TENANT_ID] = self.tenant(str(tenant_id))
        if self.api_key is not None and api_key_id is not None:
            attributes[sc.LLMPROXY_API_KEY_ID] = self.api_key(api_key_id)
        if self.user is not None and user_id is not None:
            attributes[sc.LLMPROXY_USER_ID] = self.user(user_id)
        self.request_duration.record(duration, attributes)
        self.tokens_per_request.record(input_tokens + output_tokens, attributes)
        key = tuple(attributes.items())
        error_key = (
            (*key, (sc.ERROR_TYPE, self.error_type(error_type or sc.OTHER_VALUE))) if not success else None
        )
        with self.requests.lock:
            self.requests.bump(key, 1)
            self.tokens_processed.bump((*key, _INPUT), input_tokens)
            self.tokens_processed.bump((*key, _OUTPUT), output_tokens)
            if error_key is not None:
                self.errors.bump(error_key, 1)

    def connection_opened(self) -> None:
        """One more LLM request in flight (``llmproxy.active_connections``)."""
        self.active_connections.add_key((), 1)

    def connection_closed(self) -> None:
        self.active_connections.add_key((), -1)


class Instruments:
    """Every instrument of one :class:`Telemetry`, created once from its meter."""

    def __init__(self, meter: Meter, options: CardinalityOptions) -> None:
        self.overflow = meter.create_counter(
            sc.LLMPROXY_CARDINALITY_OVERFLOW,
            unit="{measurement}",
            description="Measurements whose label value was replaced by 'other' (cardinality cap).",
        )
        self.http = HttpServerMetrics(meter, _Labels("http.server", options, self.overflow))
        self.genai = GenAIMetrics(meter, _Labels("gen_ai.client", options, self.overflow))
        self.llmproxy = LlmProxyMetrics(meter, _Labels("llmproxy", options, self.overflow))
