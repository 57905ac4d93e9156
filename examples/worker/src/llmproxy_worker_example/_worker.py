"""The worker: one job at a time, each LLM call under flags, quota, metering, audit and tracing, through the
packages' own decorators and context managers (no middleware: there is no HTTP request)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy.engine import Engine

from llmproxy.audit import AuditPublisher, audit_block
from llmproxy.core import (
    SyncRedis,
    create_engine,
    fail_fast_redis_options,
    redis_from_url,
    report_usage,
    use_context,
)
from llmproxy.flags import FeatureDisabled, Flag, FlagsClient
from llmproxy.metering import MeteringClient
from llmproxy.observability import Telemetry, genai_call, traced
from llmproxy.quota import Admission, QuotaClient, QuotaExceeded, UnknownTenant
from llmproxy.ratelimit_config import RateLimitConfigService

from ._jobs import Job, JobResult, Status, describe
from ._provider import LLM, PROVIDER, Completion, count_tokens, mock_llm
from ._queue import JobQueue
from ._settings import WorkerSettings

logger = logging.getLogger("llmproxy_worker_example")

#: Jobs run only for tenants this flag is on for (on by default; turn it off to pause a tenant's jobs).
JOBS_FLAG = "llm_jobs"
FLAG_DEFAULTS = (Flag(key=JOBS_FLAG, default_value=True, description="The tenant's LLM jobs run."),)
#: The audit action of every job that reached a valid tenant (its outcome says how it went).
JOB_ACTION = "llm_job.run"
REJECTED_ACTION = "llm_job.rejected"


@dataclass
class WorkerStats:
    """Jobs by what became of them (one thread updates these; others may read them)."""

    completed: int = 0
    deferred: int = 0
    refused: int = 0
    rejected: int = 0
    failed: int = 0

    @property
    def processed(self) -> int:
        return self.completed + self.deferred + self.refused + self.rejected + self.failed

    def count(self, status: Status) -> None:
        setattr(self, status, getattr(self, status) + 1)


@dataclass
class Worker:
    """Takes jobs off :attr:`queue` and calls :attr:`llm` for each. Build one with :meth:`from_urls` or
    :meth:`from_settings` (which own their clients: :meth:`close` them)."""

    queue: JobQueue
    quota: QuotaClient
    flags: FlagsClient
    metering: MeteringClient
    audit: AuditPublisher
    telemetry: Telemetry | None = None
    llm: LLM = mock_llm
    max_deferrals: int = 3
    limits: RateLimitConfigService | None = None
    engine: Engine | None = None
    stats: WorkerStats = field(default_factory=WorkerStats)
    _owned: Sequence[Any] = ()

    def __post_init__(self) -> None:
        tracer = self.telemetry.tracer if self.telemetry is not None else None
        self._run_job = traced(name="llm_job", tracer=tracer)(self._call_llm)

    @classmethod
    def from_settings(
        cls,
        settings: WorkerSettings | None = None,
        *,
        telemetry: Telemetry | None = None,
        llm: LLM = mock_llm,
    ) -> Worker:
        settings = settings or WorkerSettings()
        redis: SyncRedis = redis_from_url(settings.redis_url, **fail_fast_redis_options(settings.redis_url))
        engine = create_engine(settings.database_url)
        limits = RateLimitConfigService(redis, engine)
        flags = FlagsClient(redis, engine, defaults=FLAG_DEFAULTS)
        audit = AuditPublisher.from_url(settings.redis_url)
        metering = MeteringClient(redis, engine=engine)
        quota = QuotaClient(redis, limits, failure_policy=settings.worker_quota_failure_policy)
        return cls(
            queue=JobQueue(redis, result_ttl=settings.worker_result_ttl),
            quota=quota,
            flags=flags,
            metering=metering,
            audit=audit,
            telemetry=telemetry,
            llm=llm,
            max_deferrals=settings.worker_max_deferrals,
            limits=limits,
            engine=engine,
            # closed in this order: the quota client last sends what is queued and closes Redis
            _owned=(flags, limits, metering, audit, quota),
        )

    @classmethod
    def from_urls(cls, redis_url: str, database_url: str, **kwargs: Any) -> Worker:
        return cls.from_settings(WorkerSettings(redis_url=redis_url, database_url=database_url), **kwargs)

    def start(self) -> None:
        if self.limits is not None:
            self.limits.start(wait=1.0)  # a limit changed by an admin reaches this worker within a second
        self.flags.start()

    def close(self) -> None:
        for client in self._owned:
            client.close()
        if self.engine is not None:
            self.engine.dispose()

    # -- one job

    def run_once(self) -> JobResult | None:
        """Release due deferred jobs, then process the next job; None when the queue is empty."""
        self.queue.release_due()
        raw = self.queue.pop()
        return None if raw is None else self.process(raw)

    def process(self, raw: bytes) -> JobResult:
        try:
            job = Job.model_validate_json(raw)
        except ValidationError as exc:
            return self._reject(raw, describe(exc))
        ctx = job.context()
        with use_context(ctx), self.flags.use(ctx):
            try:
                completion = self._run_job(job)
            except FeatureDisabled as exc:
                result = JobResult(job_id=job.id, status="refused", reason=f"feature_disabled: {exc.key}")
            except QuotaExceeded as exc:
                result = self._over_quota(job, exc.admission)
            except UnknownTenant as exc:
                result = JobResult(job_id=job.id, status="refused", reason=f"unknown_tenant: {exc}")
            except Exception as exc:
                logger.exception("job %s failed", job.id)
                result = JobResult(job_id=job.id, status="failed", reason=type(exc).__name__)
            else:
                result = JobResult(
                    job_id=job.id,
                    status="completed",
                    reply=completion.text,
                    input_tokens=completion.input_tokens,
                    output_tokens=completion.output_tokens,
                )
        self.queue.store_result(job.tenant_id, result)
        self.stats.count(result.status)
        return result

    def _call_llm(self, job: Job) -> Completion:
        """The unit of work: audited (outermost, so refusals are on the trail too), gated by the flag,
        admitted by quota, metered, and the upstream call traced as a GenAI CLIENT span."""
        estimate = count_tokens(job.prompt) + job.max_tokens
        with (
            audit_block(self.audit, JOB_ACTION, entity_type="llm_job", entity_id=job.id, model=job.model),
            self.flags.guard(JOBS_FLAG),
            self.quota.guard(cost=estimate),
            self.metering.track(model=job.model, provider=PROVIDER),
        ):
            with genai_call(
                "chat",
                provider=PROVIDER,
                request_model=job.model,
                max_tokens=job.max_tokens,
                telemetry=self.telemetry,
            ) as call:
                completion = self.llm(job.model, job.prompt, job.max_tokens)
                call.response(
                    model=job.model,
                    input_tokens=completion.input_tokens,
                    output_tokens=completion.output_tokens,
                    finish_reasons=[completion.finish_reason],
                )
            report_usage(
                model=job.model,
                input_tokens=completion.input_tokens,
                output_tokens=completion.output_tokens,
            )
            # report_usage reached the one usage channel quota's guard and metering's track share.
        return completion

    def _over_quota(self, job: Job, admission: Admission) -> JobResult:
        """Deferred until the limit's ``Retry-After`` (at most ``max_deferrals`` times); refused when the
        job can never fit (its cost exceeds a limit) or was deferred too often."""
        retry = 1.0 if admission.unavailable else admission.retry_after
        names = ", ".join(r.name for r in admission.rejected) or "quota unavailable"
        if retry is None:
            return JobResult(job_id=job.id, status="refused", reason=f"quota: the job exceeds {names}")
        if job.attempts >= self.max_deferrals:
            reason = f"quota: {names} still exceeded after {job.attempts} deferrals"
            return JobResult(job_id=job.id, status="refused", reason=reason)
        self.queue.defer(job.deferred(), retry)
        return JobResult(job_id=job.id, status="deferred", reason=f"quota: {names}", retry_after=retry)

    def _reject(self, raw: bytes, reason: str) -> JobResult:
        logger.warning("job rejected: %s", reason)
        self.queue.reject(raw, reason)
        self.audit.publish(REJECTED_ACTION, "llm_job", outcome="failure", reason=reason[:1000])
        self.stats.count("rejected")
        return JobResult(job_id=None, status="rejected", reason=reason)


def run_worker(
    worker: Worker | None = None,
    *,
    settings: WorkerSettings | None = None,
    stop: threading.Event | None = None,
    poll: float | None = None,
    max_jobs: int | None = None,
) -> WorkerStats:
    """Process jobs until ``stop`` is set (or ``max_jobs`` were processed); returns the worker's stats.

    Without ``worker``, one is built from ``settings`` (default: the environment), started, and closed at
    the end. An empty queue is looked at again every ``poll`` seconds (``settings.worker_poll``).
    """
    settings = settings or WorkerSettings()
    stop = stop or threading.Event()
    wait = settings.worker_poll if poll is None else poll
    owned = worker is None
    if worker is None:
        worker = Worker.from_settings(settings)
        worker.start()
    try:
        while not stop.is_set() and (max_jobs is None or worker.stats.processed < max_jobs):
            if worker.run_once() is None:
                stop.wait(wait)
    finally:
        if owned:
            worker.close()
    return worker.stats
