"""The CLI's push and result commands, and its refusal of a bad tenant id."""

from __future__ import annotations

import pytest

from llmproxy.core import TenantRegistry
from llmproxy.core.testing import Backend
from llmproxy_worker_example import JobResult, Worker
from llmproxy_worker_example._cli import main


@pytest.fixture
def env(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> Backend:
    monkeypatch.setenv("LLMPROXY_REDIS_URL", backend.redis_url)
    monkeypatch.setenv("LLMPROXY_DATABASE_URL", backend.database_url)
    return backend


def test_push_queues_a_job_that_the_worker_then_answers(
    env: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    worker = Worker.from_urls(env.redis_url, env.database_url)
    try:
        assert worker.engine is not None
        tenant = TenantRegistry(worker.engine).create("cli").id
        assert main(["push", "--tenant", str(tenant), "--prompt", "from the cli", "--id", "cli-1"]) == 0
        assert capsys.readouterr().out.strip() == "cli-1"
        assert main(["result", "--tenant", str(tenant), "--id", "cli-1"]) == 1  # not processed yet

        result = worker.run_once()

        assert result is not None
        assert result.status == "completed"
        assert main(["result", "--tenant", str(tenant), "--id", "cli-1"]) == 0
        assert (
            JobResult.model_validate_json(capsys.readouterr().out).reply
            == "Mock gpt-4o-mini reply to: from the cli"
        )
    finally:
        worker.close()


def test_push_refuses_a_tenant_that_is_not_a_uuid(env: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["push", "--tenant", "acme", "--prompt", "x"])

    assert exited.value.code == 2
    assert "--tenant: not a UUID" in capsys.readouterr().err
