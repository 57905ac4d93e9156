"""Throwaway services for tests: redis-server processes, a local Redis Cluster, PostgreSQL databases."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
POSTGRES_ADMIN_URL = os.environ.get(
    "LLMPROXY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres"
)


def service_unavailable(what: str) -> None:
    """Skip the test; under ``CI=true`` fail it instead, so CI never passes with real services missing."""
    if IN_CI:
        pytest.fail(f"{what} (CI=true: real services are required)", pytrace=False)
    pytest.skip(what)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_cluster_port() -> int:
    """A free port P whose cluster-bus port P + 10000 is free too (ephemeral ports can exceed 55535)."""
    import random

    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"redis-server on port {port} did not answer within {timeout}s")


@dataclass
class RedisServer:
    """A redis-server process of our own on a free port, nothing written to disk."""

    port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ()
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="llmproxy-redis-")))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server")
        self.process = subprocess.Popen(
            [
                binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--daemonize", "no",
                "--protected-mode", "no",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class RedisClusterNodes:
    """A local Redis Cluster of ``size`` masters (no replicas), made by ``redis-cli --cluster create``."""

    size: int = 3
    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> RedisClusterNodes:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise FileNotFoundError("redis-cli")
        for _ in range(self.size):
            node = RedisServer(
                port=free_cluster_port(),
                extra_args=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                            "--cluster-node-timeout", "2000")
            )  # fmt: skip
            self.nodes.append(node.start())
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = subprocess.run(
                [cli, "-p", str(self.nodes[0].port), "cluster", "info"],
                capture_output=True,
                text=True,
                check=False,
            )
            if "cluster_state:ok" in info.stdout:
                return self
            time.sleep(0.1)
        raise RuntimeError("local Redis Cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def postgres_available(admin_url: str = POSTGRES_ADMIN_URL) -> str | None:
    """None when PostgreSQL answers at ``admin_url``; otherwise why not."""
    import sqlalchemy as sa

    engine = sa.create_engine(admin_url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        return f"PostgreSQL not reachable at {admin_url}: {type(exc).__name__}: {str(exc).strip()[:200]}"
    finally:
        engine.dispose()
    return None


def create_postgres_database(template: str = "template0", admin_url: str = POSTGRES_ADMIN_URL) -> str:
    """Create a fresh database (copied from ``template``) and return its URL."""
    import sqlalchemy as sa

    name = f"llmproxy_t_{uuid.uuid4().hex[:16]}"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    finally:
        engine.dispose()
    return str(sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False))


def drop_postgres_database(url: str, admin_url: str = POSTGRES_ADMIN_URL) -> None:
    import sqlalchemy as sa

    name = sa.make_url(url).database
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def url_through(url: str, host: str, port: int) -> str:
    """``url`` with its host and port replaced (to route a client through a :class:`TcpProxy`)."""
    if url.startswith(("redis://", "rediss://")):
        scheme, rest = url.split("://", 1)
        path = rest.split("/", 1)[1] if "/" in rest else "0"
        auth = rest.split("@", 1)[0] + "@" if "@" in rest.split("/", 1)[0] else ""
        return f"{scheme}://{auth}{host}:{port}/{path}"
    import sqlalchemy as sa

    return str(sa.make_url(url).set(host=host, port=port).render_as_string(hide_password=False))
