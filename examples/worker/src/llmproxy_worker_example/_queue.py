"""The job queue: a Redis list, a sorted set of deferred jobs, results and rejections (see the README for
every key, its type and its TTL)."""

from __future__ import annotations

import json
import uuid
from importlib.resources import files
from typing import Any, cast

from llmproxy.core import SyncRedis

from ._jobs import Job, JobResult

REJECTED_KEEP = 1000
REJECTED_TTL = 7 * 86_400


def _script(name: str) -> str:
    return files(__package__).joinpath("lua", name).read_text("utf-8")


class JobQueue:
    """Producers :meth:`push`; the worker :meth:`pop`\\ s, and puts jobs refused for now back with
    :meth:`defer`. Delivery is at most once: a worker killed mid-job loses that job (its audit trail
    shows it started nowhere); use a Redis stream with a consumer group where that matters."""

    def __init__(self, redis: SyncRedis, *, name: str = "worker", result_ttl: int = 86_400) -> None:
        if not name or any(ch in name for ch in "{}: "):
            raise ValueError(f"queue name {name!r}: non-empty, without braces, colons or spaces")
        self.redis = redis
        self.name = name
        self.result_ttl = result_ttl
        # one hash tag for the queue's keys: the scripts touch two of them (one Redis Cluster slot)
        self.jobs_key = f"llmproxy:{{{name}}}:jobs"
        self.delayed_key = f"llmproxy:{{{name}}}:delayed"
        self.rejected_key = f"llmproxy:{{{name}}}:rejected"
        scripts: Any = redis
        self._defer = scripts.register_script(_script("defer.lua"))
        self._release = scripts.register_script(_script("release.lua"))

    def result_key(self, tenant_id: uuid.UUID, job_id: str) -> str:
        return f"llmproxy:{{{tenant_id}}}:{self.name}:result:{job_id}"

    # -- producers

    def push(self, job: Job | dict[str, Any] | str | bytes) -> None:
        """Queue a job (a :class:`Job`, or its JSON / dict as a producer sends it: checked by the worker)."""
        if isinstance(job, Job):
            raw: str | bytes = job.model_dump_json()
        elif isinstance(job, dict):
            raw = json.dumps(job, default=str)
        else:
            raw = job
        self.redis.rpush(self.jobs_key, raw)

    # -- the worker

    def pop(self) -> bytes | None:
        raw = self.redis.lpop(self.jobs_key)
        if isinstance(raw, str):  # a client made with decode_responses=True
            return raw.encode()
        return raw if isinstance(raw, bytes) else None

    def defer(self, job: Job, delay: float) -> None:
        """Queue ``job`` again in ``delay`` seconds (by Redis' clock)."""
        self._defer(keys=[self.delayed_key], args=[job.model_dump_json(), max(0, round(delay * 1000))])

    def release_due(self, limit: int = 100) -> int:
        """Move the deferred jobs whose time has come back to the queue; how many moved."""
        return int(self._release(keys=[self.delayed_key, self.jobs_key], args=[limit]))

    def store_result(self, tenant_id: uuid.UUID, result: JobResult) -> None:
        if result.job_id is not None:
            key = self.result_key(tenant_id, result.job_id)
            self.redis.set(key, result.model_dump_json(), ex=self.result_ttl)

    def reject(self, raw: bytes, reason: str) -> None:
        """Keep a job that cannot be processed, with the reason, for an operator to look at (the last
        ``REJECTED_KEEP``, for a week)."""
        entry = json.dumps({"job": raw[:10_000].decode("utf-8", "replace"), "reason": reason[:2000]})
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(self.rejected_key, entry)
            pipe.ltrim(self.rejected_key, -REJECTED_KEEP, -1)
            pipe.expire(self.rejected_key, REJECTED_TTL)
            pipe.execute()

    # -- reading

    def __len__(self) -> int:
        return int(self.redis.llen(self.jobs_key))

    def result(self, tenant_id: uuid.UUID, job_id: str) -> JobResult | None:
        raw = self.redis.get(self.result_key(tenant_id, job_id))
        return None if raw is None else JobResult.model_validate_json(raw)

    def deferred(self) -> list[Job]:
        members = cast(list[bytes], self.redis.zrange(self.delayed_key, 0, -1))  # no scores asked
        return [Job.model_validate_json(raw) for raw in members]

    def rejected(self) -> list[dict[str, str]]:
        return [json.loads(raw) for raw in self.redis.lrange(self.rejected_key, 0, -1)]
