"""Gateway settings from ``LLMPROXY_*`` environment variables (pydantic-settings): one object,
:class:`GatewaySettings`, holding every concern's settings (``settings.observability``, ``.metering``,
``.audit``, ``.jwt``), each read from its own ``LLMPROXY_*`` variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from llmproxy.audit import AuditSettings
from llmproxy.auth import JWTSettings
from llmproxy.core import LLMProxySettings, is_sqlite

#: The embedded default: a SQLite file in ``./.llmproxy/`` of the working directory.
DEFAULT_DATABASE_URL = "sqlite:///.llmproxy/llmproxy.db"


class TelemetrySettings(BaseSettings):
    """The gateway's telemetry options, from ``LLMPROXY_*`` (the ``OTEL_*`` variables apply as well)."""

    model_config = SettingsConfigDict(env_prefix="LLMPROXY_", extra="ignore")

    #: OTLP base URL, e.g. ``http://collector:4318``. Unset: no OTLP export (unless ``OTEL_*`` says so).
    otlp_endpoint: str | None = None
    otlp_protocol: Literal["http/protobuf", "grpc"] | None = None
    #: ``deployment.environment.name`` of the resource.
    environment: str | None = None
    #: Serve ``/metrics``; unset = only when not exporting over OTLP.
    prometheus: bool | None = None
    metrics_path: str = Field(default="/metrics", pattern=r"^/")
    #: ``false`` leaves the gateway without telemetry (as ``OTEL_SDK_DISABLED=true`` does).
    telemetry: bool = True


class MeteringSettings(BaseSettings):
    """``LLMPROXY_METERING_*``: where the flusher runs, and how often."""

    model_config = SettingsConfigDict(env_prefix="LLMPROXY_METERING_", extra="ignore")

    flush_in_process: bool = True
    flush_interval: float = Field(60.0, gt=0, le=86400)
    #: Price models from genai-prices' bundled data (never fetched); overrides from the admin API win.
    price_catalog: bool = True


class GatewayAuditSettings(AuditSettings):
    """llmproxy-audit's ``LLMPROXY_AUDIT_*``, and where the gateway runs its consumer."""

    #: ``auto``: embedded with ``memory://`` Redis, external otherwise.
    audit_consumer: Literal["auto", "embedded", "external"] = "auto"


def _jwt_from_environment() -> JWTSettings | None:
    """llmproxy-auth's ``LLMPROXY_JWT_*``, when ``LLMPROXY_JWT_KEYS`` or ``LLMPROXY_JWT_JWKS_URL`` is set."""
    if not (os.environ.get("LLMPROXY_JWT_KEYS") or os.environ.get("LLMPROXY_JWT_JWKS_URL")):
        return None
    return JWTSettings()


class GatewaySettings(LLMProxySettings):
    """Everything the gateway reads from the environment. Every field is ``LLMPROXY_<FIELD>``.

    Backends (``LLMPROXY_REDIS_URL``, ``LLMPROXY_DATABASE_URL``) come from :class:`LLMProxySettings`; the
    gateway only moves the SQLite default into ``./.llmproxy/``.
    """

    database_url: str = DEFAULT_DATABASE_URL
    #: Seconds to open a database connection or get one from the pool (PostgreSQL: whole seconds, >= 2).
    database_connect_timeout: float = Field(default=2.0, gt=0, le=300)
    #: Seconds a statement may take (PostgreSQL's statement_timeout, and the client gives up on a server
    #: that does not answer a second later; SQLite: how long to wait for a lock). Then the answer is 503.
    database_statement_timeout: float = Field(default=5.0, gt=0, le=3600)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    #: The admin API's own app (``llmproxy-gateway admin``).
    admin_port: int = Field(default=8001, ge=0, le=65535)

    #: ``mock`` (deterministic, built in) or ``openai`` (any OpenAI-compatible upstream).
    provider: Literal["mock", "openai"] = "mock"
    #: Models the gateway serves, by the names clients use.
    chat_models: list[str] = Field(default_factory=lambda: ["gpt-4o-mini", "gpt-4o"])
    embedding_models: list[str] = Field(default_factory=lambda: ["text-embedding-3-small"])
    #: Mock provider: seconds between streamed chunks (0 = as fast as possible).
    mock_chunk_delay: float = Field(default=0.0, ge=0, le=10)
    #: Upstream provider: base URL (with ``/v1``), key, timeout, and client name -> upstream name.
    upstream_base_url: str = "https://api.openai.com/v1"
    upstream_api_key: SecretStr | None = None
    upstream_timeout: float = Field(default=60.0, gt=0)
    model_map: dict[str, str] = Field(default_factory=dict)

    #: Largest accepted request body, in bytes; larger bodies get 413.
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    #: Deepest nesting of arrays and objects accepted in a JSON body; deeper bodies get 400. At most 400:
    #: deeper, parsing and serialising come near Python's recursion limit (about 1,000 levels).
    max_json_depth: int = Field(default=128, ge=1, le=400)
    #: Output tokens assumed for a chat request without ``max_tokens`` when reserving quota.
    default_max_tokens: int = Field(default=256, ge=1)

    #: Quota behaviour with Redis unreachable: ``open`` (admit, logged), ``closed`` (503) or ``local``.
    quota_failure_policy: Literal["open", "closed", "local"] = "open"
    #: A request under a spend budget whose model has no price (neither a price override nor the catalog's):
    #: ``deny`` refuses it (403 ``model_not_priced``), ``allow`` admits it at no cost (counted by quota).
    quota_unpriced_models: Literal["deny", "allow"] = "deny"

    #: Bearer token with platform-admin rights on ``/admin`` (bootstrap). Unset: no platform admin token.
    admin_token: SecretStr | None = None
    # Tenant-admin JWTs are configured with llmproxy-auth's own variables (LLMPROXY_JWT_KEYS, _JWKS_URL,
    # _ALGORITHMS, _ISSUER, _AUDIENCE...) into ``jwt``; without LLMPROXY_JWT_KEYS or _JWKS_URL no JWT is
    # accepted.

    #: On ``serve``: create a demo tenant and API key when the database has no tenant yet.
    demo: bool = True
    demo_tenant_name: str = "demo"

    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    access_log: bool = True

    #: Once started, collect garbage and freeze what is alive (``gc.freeze()``; undone at shutdown), so the
    #: full collections that follow skip the start-up heap: the imports, the app, its clients and caches. A
    #: full collection of that heap took ~100 ms every few seconds under load (the full stack's p99) and
    #: ~10% of the process's CPU.
    gc_freeze: bool = True

    # Each concern's settings, read from its own variables when the gateway's are (the one object the app,
    # the admin API, the workers and the CLI are built from; a test may pass its own).
    #: ``LLMPROXY_OTLP_ENDPOINT``, ``_OTLP_PROTOCOL``, ``_ENVIRONMENT``, ``_PROMETHEUS``, ``_METRICS_PATH``,
    #: ``_TELEMETRY`` (and the standard ``OTEL_*``)
    observability: TelemetrySettings = Field(default_factory=TelemetrySettings)
    #: ``LLMPROXY_METERING_FLUSH_IN_PROCESS``, ``_FLUSH_INTERVAL``, ``_PRICE_CATALOG``
    metering: MeteringSettings = Field(default_factory=MeteringSettings)
    #: ``LLMPROXY_AUDIT_TRANSPORT_URL``, ``_CONSUMER``, ``_MAX_DELIVERIES``, ``_CLAIM_IDLE``, ``_BATCH_SIZE``,
    #: ``_RETENTION_MONTHS``, ``_CHECKPOINT_KEY``, ``_OLD_CHECKPOINT_KEYS`` (its backends are the gateway's)
    audit: GatewayAuditSettings = Field(default_factory=GatewayAuditSettings)
    #: llmproxy-auth's ``LLMPROXY_JWT_*`` (tenant-admin tokens); None: no JWT is accepted
    jwt: JWTSettings | None = Field(default_factory=_jwt_from_environment)

    @model_validator(mode="after")
    def _audit_on_the_gateways_backends(self) -> GatewaySettings:
        # The audit trail lives in the gateway's database and (by default) travels over its Redis, whatever
        # the environment said when the gateway's own URLs were given explicitly.
        if (self.audit.redis_url, self.audit.database_url) != (self.redis_url, self.database_url):
            self.audit = self.audit.model_copy(
                update={"redis_url": self.redis_url, "database_url": self.database_url}
            )
        return self

    @field_validator("chat_models", "embedding_models")
    @classmethod
    def _no_blank_models(cls, value: list[str]) -> list[str]:
        if any(not name.strip() for name in value):
            raise ValueError("model names must not be blank")
        return value

    def database_timeouts(self) -> dict[str, float]:
        """The timeouts for llmproxy-core's ``create_engine`` / ``create_async_engine``."""
        return {
            "connect_timeout": self.database_connect_timeout,
            "statement_timeout": self.database_statement_timeout,
        }

    def sqlite_path(self) -> Path | None:
        """The SQLite database file, or None for PostgreSQL or an in-memory SQLite database."""
        if not is_sqlite(self.database_url):
            return None
        database = make_url(self.database_url).database
        if not database or database == ":memory:":
            return None
        return Path(database)

    def data_dir(self) -> Path | None:
        """Where the embedded (SQLite) deployment keeps its files, or None."""
        path = self.sqlite_path()
        return path.parent if path is not None else None
