"""Settings shared by every llmproxy package, from ``LLMPROXY_*`` environment variables."""

from __future__ import annotations

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ._database_url import database_backend
from ._redis import _scheme


class LLMProxySettings(BaseSettings):
    """Backends every package shares. Packages subclass this for their own options."""

    model_config = SettingsConfigDict(env_prefix="LLMPROXY_", extra="ignore")

    #: ``redis://``, ``rediss://``, ``redis+cluster://``, ``redis+sentinel://`` or ``memory://``.
    redis_url: str = "memory://"
    #: ``postgresql+psycopg://user@host/db`` or ``sqlite:///path``.
    database_url: str = "sqlite:///llmproxy.db"

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        _scheme(value)
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        database_backend(value)
        return value
