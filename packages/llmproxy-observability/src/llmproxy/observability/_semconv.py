"""Names, units and bucket boundaries of every instrument, and the attribute keys we set.

One place for them so the README, the tests and the code cannot disagree. HTTP names follow the stable
HTTP semantic conventions; GenAI names follow the (development-status) GenAI conventions, which moved to
their own repository — the names below are those of its current documents.
"""

from __future__ import annotations

from typing import Final

#: Instrumentation scope of everything this package records.
SCOPE_NAME: Final = "llmproxy.observability"

# --- HTTP server (stable conventions) ---------------------------------------------------------------
HTTP_SERVER_REQUEST_DURATION: Final = "http.server.request.duration"
HTTP_SERVER_ACTIVE_REQUESTS: Final = "http.server.active_requests"
#: The HTTP conventions' advised boundaries for ``http.server.request.duration`` (seconds).
HTTP_DURATION_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)

HTTP_REQUEST_METHOD: Final = "http.request.method"
HTTP_REQUEST_METHOD_ORIGINAL: Final = "http.request.method_original"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
HTTP_ROUTE: Final = "http.route"
URL_SCHEME: Final = "url.scheme"
URL_PATH: Final = "url.path"
URL_QUERY: Final = "url.query"
CLIENT_ADDRESS: Final = "client.address"
USER_AGENT: Final = "user_agent.original"
NETWORK_PROTOCOL_VERSION: Final = "network.protocol.version"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
ERROR_TYPE: Final = "error.type"
#: The conventions' fallback for an error class or an unknown method.
OTHER_VALUE: Final = "_OTHER"

#: Methods the HTTP conventions know; anything else is recorded as ``_OTHER`` (bounded cardinality).
KNOWN_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"}
)

# --- GenAI client (development-status conventions) ---------------------------------------------------
GEN_AI_CLIENT_TOKEN_USAGE: Final = "gen_ai.client.token.usage"
GEN_AI_CLIENT_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK: Final = "gen_ai.client.operation.time_to_first_chunk"
GEN_AI_CLIENT_TIME_PER_OUTPUT_CHUNK: Final = "gen_ai.client.operation.time_per_output_chunk"
#: The GenAI conventions' advised boundaries for token counts.
GEN_AI_TOKEN_BUCKETS: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
#: The GenAI conventions' advised boundaries for the duration, time-to-first-chunk and per-chunk metrics.
GEN_AI_DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip

GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"

#: ``gen_ai.operation.name`` of the OpenAI-compatible routes, by path (what the middleware measures as
#: GenAI operations unless told otherwise).
DEFAULT_GENAI_ROUTES: Final = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "text_completion",
    "/v1/embeddings": "embeddings",
}

# --- the seed's business instruments (llmproxy.*) ----------------------------------------------------
LLMPROXY_REQUESTS: Final = "llmproxy.requests"
LLMPROXY_TOKENS_PROCESSED: Final = "llmproxy.tokens.processed"
LLMPROXY_ERRORS: Final = "llmproxy.errors"
LLMPROXY_REQUEST_DURATION: Final = "llmproxy.request.duration"
LLMPROXY_TOKENS_PER_REQUEST: Final = "llmproxy.tokens.per_request"
LLMPROXY_ACTIVE_CONNECTIONS: Final = "llmproxy.active_connections"
#: How many measurements had a label value replaced by ``other`` (the cardinality cap at work).
LLMPROXY_CARDINALITY_OVERFLOW: Final = "llmproxy.telemetry.cardinality_overflow"

LLMPROXY_STATUS: Final = "llmproxy.status"
LLMPROXY_TENANT_ID: Final = "llmproxy.tenant.id"
LLMPROXY_API_KEY_ID: Final = "llmproxy.api_key.id"
LLMPROXY_USER_ID: Final = "llmproxy.user.id"
LLMPROXY_REQUEST_ID: Final = "llmproxy.request.id"
LLMPROXY_CLIENT_DISCONNECTED: Final = "llmproxy.client.disconnected"
#: What the llmproxy middlewares decided, read off the request context and the response (``_decisions.py``).
LLMPROXY_AUTH_OUTCOME: Final = "llmproxy.auth.outcome"
LLMPROXY_QUOTA_ALLOWED: Final = "llmproxy.quota.allowed"
LLMPROXY_QUOTA_REMAINING_REQUESTS: Final = "llmproxy.quota.remaining_requests"
LLMPROXY_QUOTA_REMAINING_TOKENS: Final = "llmproxy.quota.remaining_tokens"
LLMPROXY_METRIC: Final = "llmproxy.metric"
LLMPROXY_ATTRIBUTE: Final = "llmproxy.attribute"

#: Label value that stands for every value past the cardinality cap.
OVERFLOW_VALUE: Final = "other"
