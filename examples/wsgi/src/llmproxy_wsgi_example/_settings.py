"""Settings from ``LLMPROXY_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from llmproxy.core import LLMProxySettings


class WSGISettings(LLMProxySettings):
    """What the WSGI example reads from the environment; every field is ``LLMPROXY_<FIELD>``.

    The backends (``LLMPROXY_REDIS_URL``, ``LLMPROXY_DATABASE_URL``) come from :class:`LLMProxySettings`:
    ``memory://`` and ``sqlite:///llmproxy.db`` by default, the embedded demo.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    #: Models the mock serves, by the names clients use.
    models: list[str] = Field(default_factory=lambda: ["gpt-4o-mini", "gpt-4o"])
    #: Largest accepted request body, in bytes; larger bodies get 413.
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    #: Output tokens assumed for a chat request without ``max_tokens`` when reserving quota.
    default_max_tokens: int = Field(default=256, ge=1, le=4096)
    #: Quota behaviour with Redis unreachable: ``open`` (admit, logged), ``closed`` (503) or ``local``.
    quota_failure_policy: Literal["open", "closed", "local"] = "open"
    service_name: str = "llmproxy-wsgi-example"

    @field_validator("models")
    @classmethod
    def _no_blank_models(cls, value: list[str]) -> list[str]:
        if not value or any(not name.strip() for name in value):
            raise ValueError("models must be a non-empty list of non-blank names")
        return value
