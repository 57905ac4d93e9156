"""Jobs and their results (pure pydantic): what producers push, what the worker answers."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmproxy.core import RequestContext

#: The endpoint jobs are metered and limited under (a tenant may configure limits for it).
JOBS_ENDPOINT = "/jobs/chat"
MAX_TOKENS = 4096

Status = Literal["completed", "deferred", "refused", "rejected", "failed"]


class Job(BaseModel):
    """One LLM call to make for a tenant. ``attempts`` counts the times the job was deferred."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    tenant_id: uuid.UUID
    model: str = Field(min_length=1, max_length=200)
    prompt: str = Field(min_length=1, max_length=100_000)
    max_tokens: int = Field(default=64, ge=1, le=MAX_TOKENS, strict=True)
    api_key_id: str | None = Field(default=None, max_length=100)
    attempts: int = Field(default=0, ge=0)

    def context(self) -> RequestContext:
        """The job's identity, as a request's would be: quota, flags, metering and audit read it."""
        return RequestContext(
            tenant_id=self.tenant_id,
            api_key_id=self.api_key_id,
            endpoint=JOBS_ENDPOINT,
            method="JOB",
            request_id=self.id,
            model=self.model,
        )

    def deferred(self) -> Job:
        return self.model_copy(update={"attempts": self.attempts + 1})


class JobResult(BaseModel):
    """What became of a job: its reply and usage when completed, else the reason."""

    job_id: str | None
    status: Status
    reply: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    reason: str | None = None
    #: For a deferred job: seconds until it is tried again.
    retry_after: float | None = None


def describe(exc: ValidationError) -> str:
    """``"tenant_id: Field required; prompt: ..."``: every refused field, named."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "job"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
