"""An llmproxy worker loop: a Redis queue consumer calling an LLM for each job under quota, flags,
metering, audit and tracing, through the packages' decorators and context managers."""

from ._jobs import JOBS_ENDPOINT, Job, JobResult, describe
from ._provider import LLM, PROVIDER, Completion, count_tokens, mock_llm
from ._queue import JobQueue
from ._settings import WorkerSettings
from ._version import __version__
from ._worker import FLAG_DEFAULTS, JOB_ACTION, JOBS_FLAG, REJECTED_ACTION, Worker, WorkerStats, run_worker

__all__ = [
    "FLAG_DEFAULTS",
    "JOBS_ENDPOINT",
    "JOBS_FLAG",
    "JOB_ACTION",
    "LLM",
    "PROVIDER",
    "REJECTED_ACTION",
    "Completion",
    "Job",
    "JobQueue",
    "JobResult",
    "Worker",
    "WorkerSettings",
    "WorkerStats",
    "__version__",
    "count_tokens",
    "describe",
    "mock_llm",
    "run_worker",
]
