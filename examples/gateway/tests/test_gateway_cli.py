"""``llmproxy-gateway migrate | create-tenant | create-key`` and the JSON access log."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx

from .conftest import GATEWAY_SCRIPT, GatewayProcess, start_gateway


def cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMPROXY_")}
    env["LLMPROXY_DATABASE_URL"] = f"sqlite:///{workdir / 'cli.db'}"
    return subprocess.run(
        [str(GATEWAY_SCRIPT), *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=120
    )


def test_migrate_create_tenant_and_create_key_make_a_key_the_server_accepts(tmp_path: Path) -> None:
    migrated = cli(tmp_path, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "migrated core" in migrated.stdout
    tenant = cli(tmp_path, "create-tenant", "acme")
    assert tenant.returncode == 0, tenant.stderr
    key = cli(tmp_path, "create-key", "acme", "--name", "ci")
    assert key.returncode == 0, key.stderr
    secret = key.stdout.strip()
    assert secret.startswith("sk-llmp-")
    gateway = start_gateway(
        tmp_path, redis_url="memory://cli", database_url=f"sqlite:///{tmp_path / 'cli.db'}"
    )
    try:
        response = httpx.get(f"{gateway.base_url}/v1/models", headers={"authorization": f"Bearer {secret}"})
        assert response.status_code == 200
    finally:
        gateway.stop()


def test_create_key_for_an_unknown_tenant_fails_with_a_message(tmp_path: Path) -> None:
    result = cli(tmp_path, "create-key", "nobody")
    assert result.returncode == 2
    assert "no tenant with id or name 'nobody'" in result.stderr


def test_a_duplicate_tenant_name_fails_with_a_message(tmp_path: Path) -> None:
    assert cli(tmp_path, "create-tenant", "twice").returncode == 0
    again = cli(tmp_path, "create-tenant", "twice")
    assert again.returncode == 2
    assert "already exists" in again.stderr


def test_invalid_configuration_is_reported_not_raised(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMPROXY_")}
    env["LLMPROXY_REDIS_URL"] = "mysql://nope"
    result = subprocess.run(
        [str(GATEWAY_SCRIPT), "migrate"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "redis_url" in result.stderr
    assert "Traceback" not in result.stderr


def test_each_request_is_logged_as_one_json_line_with_its_request_id(
    embedded_gateway: GatewayProcess,
) -> None:
    headers = {"authorization": f"Bearer {embedded_gateway.api_key}", "x-request-id": "log-me-123"}
    assert httpx.get(f"{embedded_gateway.base_url}/v1/models", headers=headers).status_code == 200
    deadline = time.monotonic() + 5
    entry = None
    while entry is None and time.monotonic() < deadline:
        for line in embedded_gateway.log_path.read_text().splitlines():
            if '"log-me-123"' in line:
                entry = json.loads(line)
        time.sleep(0.05)
    assert entry is not None
    assert entry["status"] == 200
    assert entry["path"] == "/v1/models"
    assert entry["tenant_id"] == embedded_gateway.tenant_id


def test_serve_without_an_unknown_middleware_fails_with_a_message(tmp_path: Path) -> None:
    result = cli(tmp_path, "serve", "--without", "metering,quota")
    assert result.returncode == 2
    assert "unknown middleware(s) quota: choose from audit, flags, metering, telemetry" in result.stderr
