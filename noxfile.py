"""Developer tasks. `nox -s tests` is the whole test suite; `nox -s gateway` runs the example gateway."""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).parent
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "typecheck", "tests"]

# Dependency order: each package only needs the ones before it.
PACKAGE_ORDER = [
    "llmproxy-core",
    "llmproxy-ratelimit-config",
    "llmproxy-auth",
    "llmproxy-quota",
    "llmproxy-flags",
    "llmproxy-metering",
    "llmproxy-audit",
    "llmproxy-observability",
]
TEST_DEPS = [
    "pytest>=8",
    "pytest-asyncio>=0.24",
    "hypothesis>=6.100",
    "httpx>=0.27",
    "openai>=1.40",
    "uvicorn>=0.30",
]


#: Extras the workspace installs, by package (the rest are installed plain).
EXTRAS = {
    "llmproxy-core": "[redis,postgres,sqlite-async,testing]",
    "llmproxy-observability": "[grpc,prometheus,testing]",
    "llmproxy-metering": "[prices]",
    "llmproxy-audit": "[amqp]",  # RabbitMQ's tests run (CI starts the broker)
}


def local_packages() -> list[str]:
    found = [
        f"packages/{name}" for name in PACKAGE_ORDER if (ROOT / "packages" / name / "pyproject.toml").exists()
    ]
    if (ROOT / "examples/gateway/pyproject.toml").exists():
        found.append("examples/gateway")
    return found


def install_workspace(session: nox.Session, *extra: str) -> None:
    editable: list[str] = []
    for path in local_packages():
        extras = EXTRAS.get(path.rsplit("/", 1)[-1], "")
        editable += ["-e", path + extras]
    session.install(*editable, *extra)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite: every package and the gateway, on embedded and real backends."""
    install_workspace(session, *TEST_DEPS)
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    install_workspace(session, "mypy>=1.11", "types-cachetools", *TEST_DEPS)
    session.run("mypy", *[f"{p}/src" for p in local_packages()])


@nox.session
def gateway(session: nox.Session) -> None:
    """Run the example gateway on embedded defaults (SQLite + in-memory Redis + mock provider)."""
    install_workspace(session)
    session.run("llmproxy-gateway", "serve", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Run a benchmark: `nox -s bench -- quota` runs bench/bench_quota.py (real services needed)."""
    install_workspace(
        session,
        "limits[redis]>=5",
        "httpx>=0.27",
        "uvicorn>=0.30",
        "opentelemetry-instrumentation-asgi>=0.66b0",
        "UnleashClient>=6.0",
    )
    for name in session.posargs or ["ratelimit_config"]:
        session.run("python", f"bench/bench_{name}.py")
