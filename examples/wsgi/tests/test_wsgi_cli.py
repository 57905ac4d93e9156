"""The CLI's create-key: a tenant and a key the app then accepts."""

from __future__ import annotations

import pytest

from llmproxy.auth import ApiKeyService
from llmproxy.core.testing import Backend
from llmproxy_wsgi_example import WSGISettings
from llmproxy_wsgi_example._cli import main


def test_create_key_prints_a_key_of_the_named_tenant(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLMPROXY_REDIS_URL", backend.redis_url)
    monkeypatch.setenv("LLMPROXY_DATABASE_URL", backend.database_url)

    assert main(["create-key", "acme"]) == 0
    assert main(["create-key", "acme"]) == 0
    first, second = capsys.readouterr().out.split()

    keys = ApiKeyService.from_urls(WSGISettings().redis_url, WSGISettings().database_url)
    try:
        tenants = {keys.verify(first).tenant_id, keys.verify(second).tenant_id}
    finally:
        keys.close()
    assert len(tenants) == 1  # the second call found the tenant by its name
