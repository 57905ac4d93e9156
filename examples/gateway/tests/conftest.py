"""Gateway test fixtures: real ``llmproxy-gateway serve`` processes on loopback ports."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt
import pytest

from llmproxy.core.testing import (
    RedisServer,
    create_postgres_database,
    drop_postgres_database,
    free_port,
    postgres_available,
    service_unavailable,
)

GATEWAY_SCRIPT = Path(sys.executable).with_name("llmproxy-gateway")
JWT_SECRET = "gateway-tests-hs256-secret-" + "x" * 40


def tenant_admin_token(tenant_id: str, *, roles: tuple[str, ...] = ("tenant_admin",)) -> str:
    """A JWT the test gateways accept: a tenant admin of ``tenant_id``."""
    claims = {
        "tenant_id": tenant_id,
        "sub": "admin@example.com",
        "roles": list(roles),
        "exp": time.time() + 600,
    }
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


@dataclass
class GatewayProcess:
    """One gateway server process and how to reach it."""

    base_url: str
    admin_token: str
    process: subprocess.Popen[bytes]
    log_path: Path
    stdout_path: Path
    env: dict[str, str] = field(default_factory=dict)
    api_key: str = ""
    tenant_id: str = ""

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.admin_token}"}

    def admin(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        """Call the admin API as the platform admin."""
        kwargs.setdefault("timeout", 10)
        return httpx.request(
            method,
            f"{self.base_url}/admin{path}",
            headers=self.admin_headers,
            **kwargs,  # type: ignore[arg-type]
        )

    def create_tenant(self, name: str) -> str:
        response = self.admin("POST", "/tenants", json={"name": name})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def issue_key(self, tenant_id: str, name: str = "test") -> tuple[str, str]:
        """``(key id, secret)`` of a new API key."""
        response = self.admin("POST", f"/tenants/{tenant_id}/api-keys", json={"name": name})
        assert response.status_code == 201, response.text
        return str(response.json()["id"]), str(response.json()["key"])

    def provision(self, tenant_name: str = "acme") -> GatewayProcess:
        """Create a tenant and an API key, and make them this gateway's defaults."""
        self.tenant_id = self.create_tenant(tenant_name)
        _, self.api_key = self.issue_key(self.tenant_id)
        return self

    def logs(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_gateway(
    workdir: Path,
    *,
    redis_url: str | None,
    database_url: str | None,
    name: str = "gw",
    args: tuple[str, ...] = (),
    **settings: str,
) -> GatewayProcess:
    """Start ``llmproxy-gateway serve`` (the installed console script) and wait until it answers."""
    port = free_port()
    admin_token = settings.pop("admin_token", None) or secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMPROXY_")}
    env.update(
        {
            "LLMPROXY_PORT": str(port),
            "LLMPROXY_ADMIN_TOKEN": admin_token,
            "LLMPROXY_DEMO": "false",
            "LLMPROXY_JWT_KEYS": json.dumps({"": JWT_SECRET}),
            "LLMPROXY_JWT_ALGORITHMS": '["HS256"]',
        }
    )
    if redis_url is not None:
        env["LLMPROXY_REDIS_URL"] = redis_url
    if database_url is not None:
        env["LLMPROXY_DATABASE_URL"] = database_url
    env.update({f"LLMPROXY_{k.upper()}": v for k, v in settings.items()})
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    stdout_path = workdir / f"{name}.out"
    with log_path.open("wb") as log, stdout_path.open("wb") as out:
        process = subprocess.Popen(
            [str(GATEWAY_SCRIPT), "serve", *args], cwd=workdir, env=env, stdout=out, stderr=log
        )
    gateway = GatewayProcess(f"http://127.0.0.1:{port}", admin_token, process, log_path, stdout_path, env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited with {process.returncode}:\n{gateway.logs()}")
        try:
            if httpx.get(f"{gateway.base_url}/healthz", timeout=1).status_code == 200:
                return gateway
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    gateway.stop()
    raise RuntimeError(f"gateway did not answer within 60 s:\n{gateway.logs()}")


@pytest.fixture(scope="module")
def embedded_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway on embedded backends (memory:// Redis, SQLite) shared by a test module."""
    workdir = tmp_path_factory.mktemp("gateway")
    gateway = start_gateway(
        workdir,
        redis_url=f"memory://gw-{secrets.token_hex(4)}",
        database_url=f"sqlite:///{workdir / 'gateway.db'}",
        max_body_bytes="65536",
    )
    gateway.provision()
    yield gateway
    gateway.stop()


@pytest.fixture
def gateway_script() -> Path:
    if not GATEWAY_SCRIPT.exists():  # pragma: no cover - the package is installed in every test venv
        found = shutil.which("llmproxy-gateway")
        assert found, "llmproxy-gateway is not installed"
        return Path(found)
    return GATEWAY_SCRIPT


@pytest.fixture(scope="module")
def real_services() -> Iterator[tuple[str, str]]:
    """A throwaway redis-server and a fresh (unmigrated: the gateway migrates it) PostgreSQL database."""
    problem = postgres_available()
    if problem:
        service_unavailable(problem)
    try:
        redis = RedisServer().start()
    except (FileNotFoundError, RuntimeError) as exc:
        service_unavailable(f"cannot start a throwaway redis-server: {exc}")
        raise
    database_url = create_postgres_database()
    yield redis.url, database_url
    redis.stop()
    drop_postgres_database(database_url)


@pytest.fixture(scope="module")
def real_gateway(
    real_services: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """One gateway on real Redis + PostgreSQL, shared by a test module."""
    redis_url, database_url = real_services
    gateway = start_gateway(
        tmp_path_factory.mktemp("real-gateway"),
        redis_url=redis_url,
        database_url=database_url,
        max_body_bytes="65536",
    )
    gateway.provision()
    yield gateway
    gateway.stop()


@pytest.fixture(params=["embedded", "real"])
def gateway(request: pytest.FixtureRequest) -> GatewayProcess:
    """The module's gateway on embedded backends, then on real Redis + PostgreSQL."""
    found: GatewayProcess = request.getfixturevalue(f"{request.param}_gateway")
    return found
