"""Settings from ``LLMPROXY_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmproxy.core import LLMProxySettings


class WorkerSettings(LLMProxySettings):
    """What the worker reads from the environment: ``LLMPROXY_REDIS_URL``, ``LLMPROXY_DATABASE_URL`` (from
    :class:`LLMProxySettings`) and ``LLMPROXY_WORKER_*``."""

    #: Seconds the loop waits when the queue is empty before it looks again.
    worker_poll: float = Field(default=0.2, gt=0, le=60)
    #: A job refused by a rate limit is put back this many times (after its ``Retry-After``), then refused.
    worker_max_deferrals: int = Field(default=3, ge=0, le=100)
    #: How long a job's result stays readable in Redis, seconds.
    worker_result_ttl: int = Field(default=86_400, ge=1)
    #: Quota behaviour with Redis unreachable: ``open`` (admit, logged), ``closed`` (refuse) or ``local``.
    worker_quota_failure_policy: Literal["open", "closed", "local"] = "open"
    worker_service_name: str = "llmproxy-worker-example"
