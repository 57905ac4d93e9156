"""Gateway settings from ``LLMPROXY_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from sqlalchemy.engine import make_url

from llmproxy.core import LLMProxySettings, is_sqlite

#: The embedded default: a SQLite file in ``./.llmproxy/`` of the working directory.
DEFAULT_DATABASE_URL = "sqlite:///.llmproxy/llmproxy.db"


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
    # _ALGORITHMS, _ISSUER, _AUDIENCE...); without LLMPROXY_JWT_KEYS or _JWKS_URL no JWT is accepted.

    #: On ``serve``: create a demo tenant and API key when the database has no tenant yet.
    demo: bool = True
    demo_tenant_name: str = "demo"

    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    access_log: bool = True

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
