"""The worker example on embedded and real backends: jobs pushed to the Redis queue, the loop run in a
thread until it drains; each job's LLM call under flags, quota, metering, audit and tracing."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from llmproxy.audit import AuditStore, StoredAuditEvent, consumer_from_url
from llmproxy.core.testing import eventually
from llmproxy.flags import Flag
from llmproxy.metering import UsageReport
from llmproxy_worker_example import JOB_ACTION, JOBS_FLAG, REJECTED_ACTION, Completion, Job, JobResult

from .conftest import Harness


def result_of(harness: Harness, job: Job) -> JobResult:
    found = harness.worker.queue.result(job.tenant_id, job.id)
    assert found is not None, f"no result for {job.id}"
    return found


def usage_of(harness: Harness, tenant_id: uuid.UUID, requests: int) -> UsageReport:
    metering = harness.worker.metering
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)

    def report() -> UsageReport | None:
        metering.flush()
        found = metering.get_usage(tenant_id, hour - timedelta(hours=1), hour + timedelta(hours=2))
        return found if found.totals.requests >= requests else None

    if requests:
        return eventually(report)
    metering.flush()
    return metering.get_usage(tenant_id, hour - timedelta(hours=1), hour + timedelta(hours=2))


def audited(harness: Harness, tenant_id: uuid.UUID | None, count: int) -> list[StoredAuditEvent]:
    assert harness.worker.engine is not None
    consumer = consumer_from_url(harness.backend.redis_url, harness.backend.database_url)
    store = AuditStore(harness.worker.engine)

    def stored() -> list[StoredAuditEvent] | None:
        harness.worker.audit.flush()
        consumer.drain(wait=0.05)
        events = store.query(tenant_id=tenant_id).events
        return events if len(events) >= count else None

    try:
        return eventually(stored)
    finally:
        consumer.stop()
        consumer.engine.dispose()


# -- the loop --------------------------------------------------------------------------------------------


def test_queued_jobs_are_processed_and_their_results_kept(harness: Harness) -> None:
    tenant = harness.new_tenant()
    jobs = [harness.job(tenant, f"prompt number {n}") for n in range(3)]
    for job in jobs:
        harness.worker.queue.push(job)

    harness.drain(3)

    assert harness.worker.stats.completed == 3
    for job in jobs:
        result = result_of(harness, job)
        assert result.status == "completed"
        assert result.reply == f"Mock gpt-4o-mini reply to: {job.prompt}"
        assert (result.input_tokens, result.output_tokens) == (3, 4 + 3)  # the 4-word preamble + the prompt


def test_completed_jobs_are_metered(harness: Harness) -> None:
    tenant = harness.new_tenant()
    jobs = [harness.job(tenant, "one two"), harness.job(tenant, "three four five six")]
    for job in jobs:
        harness.worker.queue.push(job)
    harness.drain(2)

    totals = usage_of(harness, tenant, 2).totals

    assert totals.requests == 2
    assert totals.input_tokens == 2 + 4
    assert totals.output_tokens == sum(result_of(harness, job).output_tokens for job in jobs)


def test_each_job_is_audited_with_its_outcome(harness: Harness) -> None:
    tenant = harness.new_tenant()
    jobs = [harness.job(tenant), harness.job(tenant)]
    for job in jobs:
        harness.worker.queue.push(job)
    harness.drain(2)

    events = audited(harness, tenant, 2)

    assert len(events) == 2
    assert {e.entity_id for e in events} == {job.id for job in jobs}
    assert {(e.action, e.outcome, e.request_id == e.entity_id) for e in events} == {
        (JOB_ACTION, "success", True)
    }
    assert all(e.metadata["model"] == "gpt-4o-mini" for e in events)


def test_each_job_is_traced_with_its_llm_call_as_a_child_span(harness: Harness) -> None:
    tenant = harness.new_tenant()
    harness.worker.queue.push(harness.job(tenant, "trace me please"))
    harness.drain(1)
    assert harness.worker.telemetry is not None
    harness.worker.telemetry.force_flush()

    spans: dict[str, ReadableSpan] = {s.name: s for s in harness.spans.get_finished_spans()}
    job_span, call_span = spans["llm_job"], spans["chat gpt-4o-mini"]
    assert call_span.kind == SpanKind.CLIENT
    assert call_span.parent is not None
    assert job_span.context is not None
    assert call_span.parent.span_id == job_span.context.span_id
    assert (call_span.attributes or {})["gen_ai.usage.input_tokens"] == 3


# -- quota -----------------------------------------------------------------------------------------------


def test_a_job_over_the_rate_limit_is_deferred_until_its_retry_after(harness: Harness) -> None:
    tenant = harness.new_tenant()
    harness.limit(tenant, requests_per_minute=2)
    jobs = [harness.job(tenant) for _ in range(3)]
    for job in jobs:
        harness.worker.queue.push(job)

    harness.drain(3)

    assert [result_of(harness, job).status for job in jobs] == ["completed", "completed", "deferred"]
    late = result_of(harness, jobs[2])
    assert late.retry_after is not None
    assert 0 < late.retry_after <= 60
    assert [(j.id, j.attempts) for j in harness.worker.queue.deferred()] == [(jobs[2].id, 1)]
    assert usage_of(harness, tenant, 2).totals.requests == 2  # the deferred job was not metered


def test_a_job_that_can_never_fit_its_limit_is_refused_not_deferred(harness: Harness) -> None:
    tenant = harness.new_tenant()
    harness.limit(tenant, tokens_per_minute=10)
    job = harness.job(tenant, max_tokens=64)  # estimate 2 + 64 tokens > 10 a minute
    harness.worker.queue.push(job)

    harness.drain(1)

    result = result_of(harness, job)
    assert result.status == "refused"
    assert result.reason is not None
    assert "tokens_per_minute" in result.reason
    assert harness.worker.queue.deferred() == []


def test_a_job_deferred_too_often_is_refused(harness: Harness) -> None:
    tenant = harness.new_tenant()
    harness.limit(tenant, requests_per_minute=1)
    first, again = harness.job(tenant), harness.job(tenant, attempts=harness.worker.max_deferrals)
    harness.worker.queue.push(first)
    harness.worker.queue.push(again)

    harness.drain(2)

    assert result_of(harness, first).status == "completed"
    assert result_of(harness, again).status == "refused"
    assert harness.worker.queue.deferred() == []


def test_a_deferred_job_returns_to_the_queue_when_due(harness: Harness) -> None:
    queue = harness.worker.queue
    tenant = harness.new_tenant()
    due, later = harness.job(tenant), harness.job(tenant)
    queue.defer(due, 0)
    queue.defer(later, 60)

    moved = queue.release_due()

    assert moved == 1
    raw = queue.pop()
    assert raw is not None
    assert Job.model_validate_json(raw).id == due.id
    assert [j.id for j in queue.deferred()] == [later.id]


# -- flags -----------------------------------------------------------------------------------------------


def test_jobs_run_only_for_tenants_the_flag_is_on_for(harness: Harness) -> None:
    allowed, paused = harness.new_tenant(), harness.new_tenant()
    harness.worker.flags.put(Flag(key=JOBS_FLAG, default_value=False, enabled_for_tenants={allowed}))
    jobs = [harness.job(allowed), harness.job(paused)]
    for job in jobs:
        harness.worker.queue.push(job)

    harness.drain(2)

    assert result_of(harness, jobs[0]).status == "completed"
    refused = result_of(harness, jobs[1])
    assert (refused.status, refused.reason) == ("refused", f"feature_disabled: {JOBS_FLAG}")
    assert usage_of(harness, paused, 0).totals.requests == 0
    [event] = audited(harness, paused, 1)
    assert (event.outcome, event.metadata["error"]) == (
        "denied",
        "FeatureDisabled",
    )  # a refusal, not a failure


# -- bad input and failures ------------------------------------------------------------------------------


def test_malformed_jobs_are_rejected_with_the_reason_and_the_loop_goes_on(harness: Harness) -> None:
    tenant = harness.new_tenant()
    queue = harness.worker.queue
    queue.push(b"{not json")
    queue.push({"id": "j-1", "model": "gpt-4o-mini"})  # no tenant_id, no prompt
    queue.push({"id": "j-2", "tenant_id": "acme", "model": "gpt-4o-mini", "prompt": "hi"})
    queue.push({"id": "j-3", "tenant_id": str(tenant), "model": "m", "prompt": "hi", "max_tokens": "10"})
    good = harness.job(tenant)
    queue.push(good)

    harness.drain(5)

    assert harness.worker.stats.rejected == 4
    assert result_of(harness, good).status == "completed"
    reasons = [entry["reason"] for entry in queue.rejected()]
    assert "Invalid JSON" in reasons[0]
    assert "tenant_id: Field required" in reasons[1]
    assert "prompt: Field required" in reasons[1]
    assert reasons[2].startswith("tenant_id:")
    assert reasons[3].startswith("max_tokens:")
    assert json.loads(queue.rejected()[1]["job"])["id"] == "j-1"
    rejected = audited(harness, None, 4)
    assert {e.action for e in rejected} == {REJECTED_ACTION}


def test_a_failing_llm_fails_the_job_not_the_worker(harness: Harness) -> None:
    calls: list[str] = []

    def flaky(model: str, prompt: str, max_tokens: int) -> Completion:
        calls.append(prompt)
        if prompt == "explode":
            raise RuntimeError("upstream down")
        return Completion("fine", "stop", 1, 1)

    harness.worker.llm = flaky
    tenant = harness.new_tenant()
    bad, good = harness.job(tenant, "explode"), harness.job(tenant, "fine")
    harness.worker.queue.push(bad)
    harness.worker.queue.push(good)

    harness.drain(2)

    assert calls == ["explode", "fine"]
    assert (result_of(harness, bad).status, result_of(harness, bad).reason) == ("failed", "RuntimeError")
    assert result_of(harness, good).status == "completed"
