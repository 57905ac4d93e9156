"""Developer tasks. `nox -s tests` is the whole test suite; `nox -s gateway` runs the example gateway.

The local packages are found from their pyprojects (`packages/*/pyproject.toml`, `examples/*/pyproject.toml`)
and installed in the order of their declared `llmproxy-*` dependencies, so a new package needs no edit here.
A package is installed with every extra it declares: its `testing` extra names what its own tests need.
"""

from __future__ import annotations

import graphlib
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import nox
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parent
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "typecheck", "imports", "tests"]

RUFF = "ruff>=0.6"
#: The test harness: the root conftest loads its pytest plugin for every suite (pytest, pytest-asyncio,
#: hypothesis, httpx come with it). Anything else a package's tests need is in that package's extras.
HARNESS = "llmproxy-core[testing]"


@dataclass(frozen=True)
class LocalPackage:
    name: str  # the distribution's canonical name: "llmproxy-quota"
    path: str  # relative to the repository: "packages/llmproxy-quota"
    extras: tuple[str, ...]  # every extra it declares
    needs: frozenset[str]  # local distributions its dependencies name
    needs_with_extras: frozenset[str]  # ... and those its extras name (its tests' needs among them)
    modules: tuple[str, ...]  # what `import` finds in src/: "llmproxy.quota", "llmproxy_gateway"

    def editable(self, *, with_extras: bool) -> list[str]:
        extras = f"[{','.join(self.extras)}]" if with_extras and self.extras else ""
        return ["-e", f"{self.path}{extras}"]


def _import_names(src: Path) -> tuple[str, ...]:
    names = []
    for top in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        if (top / "__init__.py").exists():
            names.append(top.name)
        else:  # a PEP 420 namespace (llmproxy): its portions are the packages
            names += [f"{top.name}.{p.name}" for p in sorted(top.iterdir()) if (p / "__init__.py").exists()]
    return tuple(names)


@cache
def local_packages() -> dict[str, LocalPackage]:
    """Every local package by name, in dependency order (each after the local packages it needs)."""
    found: dict[str, tuple[Path, dict]] = {}
    pyprojects = [*ROOT.glob("packages/*/pyproject.toml"), *ROOT.glob("examples/*/pyproject.toml")]
    for pyproject in sorted(pyprojects):
        project = tomllib.loads(pyproject.read_text("utf-8"))["project"]
        found[canonicalize_name(project["name"])] = (pyproject.parent, project)

    def local(requirements: list[str], own: str) -> frozenset[str]:
        names = {canonicalize_name(Requirement(r).name) for r in requirements}
        return frozenset(n for n in names if n in found and n != own)

    packages = {}
    for name, (folder, project) in found.items():
        optional: dict[str, list[str]] = project.get("optional-dependencies", {})
        needs = local(project.get("dependencies", []), name)
        packages[name] = LocalPackage(
            name=name,
            path=folder.relative_to(ROOT).as_posix(),
            extras=tuple(optional),
            needs=needs,
            needs_with_extras=needs | local([r for rs in optional.values() for r in rs], name),
            modules=_import_names(folder / "src"),
        )
    sorter = graphlib.TopologicalSorter({n: p.needs_with_extras for n, p in packages.items()})
    order: list[str] = []
    sorter.prepare()  # raises graphlib.CycleError naming the cycle
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        order += ready
        sorter.done(*ready)
    return {name: packages[name] for name in order}


def closure(name: str, *, with_extras: bool) -> list[LocalPackage]:
    """``name`` and the local packages it needs (with its extras': those of their extras too), in order."""
    packages = local_packages()
    wanted: set[str] = set()
    todo = [name]
    while todo:
        current = packages[todo.pop()]
        if current.name not in wanted:
            wanted.add(current.name)
            todo += current.needs_with_extras if with_extras else current.needs
    return [p for n, p in packages.items() if n in wanted]


def install_workspace(session: nox.Session, *extra: str) -> None:
    """Every local package, editable, with all its extras (sibling requirements resolve to these)."""
    editable = [arg for p in local_packages().values() for arg in p.editable(with_extras=True)]
    session.install(*editable, *extra)


def source_dirs() -> list[str]:
    return [f"{p.path}/src" for p in local_packages().values()]


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite: every package and the gateway, on embedded and real backends."""
    install_workspace(session)
    session.run("pytest", *(session.posargs or ["-q"]))


# A fresh environment each time: nothing left over from an earlier run may hide a missing dependency.
@nox.session(reuse_venv=False)
@nox.parametrize("package", [nox.param(name, id=name) for name in local_packages()])
def isolated(session: nox.Session, package: str) -> None:
    """One package's tests in an environment holding only what its pyproject declares (and its siblings')."""
    target = local_packages()[package]
    # Its runtime dependencies alone: importing it must work without any extra or test tool.
    runtime = closure(package, with_extras=False)
    session.install(*[arg for p in runtime for arg in p.editable(with_extras=False)])
    for module in target.modules:
        session.run("python", "-c", f"import {module}", silent=True)
    # Then with its extras (its `testing` extra names what its tests need) and the harness, and its tests.
    everything = closure(package, with_extras=True)
    session.install(*[arg for p in everything for arg in p.editable(with_extras=p is target)], HARNESS)
    session.run("pytest", f"{target.path}/tests", *(session.posargs or ["-q"]))


@nox.session
def lint(session: nox.Session) -> None:
    session.install(RUFF)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    install_workspace(session, "mypy>=1.11", "types-cachetools")
    session.run("mypy", *source_dirs(), env={"MYPYPATH": ":".join(source_dirs())})


@nox.session
def unasync(session: nox.Session) -> None:
    """Generate the sync twins from their async sources; `-- --check` fails when one is not current."""
    session.install(RUFF)
    session.run("python", "scripts/unasync.py", *session.posargs)


@nox.session
def imports(session: nox.Session) -> None:
    """The layering of docs/architecture.md, checked by import-linter (contracts: root pyproject.toml)."""
    session.install("import-linter>=2.1")
    # import-linter reads the source; nothing needs installing but the namespace portions on the path.
    session.run("lint-imports", env={"PYTHONPATH": ":".join(source_dirs())})


@nox.session
def gateway(session: nox.Session) -> None:
    """Run the example gateway on embedded defaults (SQLite + in-memory Redis + mock provider)."""
    install_workspace(session)
    session.run("llmproxy-gateway", "serve", *session.posargs)


#: The deployment's backends unless LLMPROXY_* says otherwise: the local Redis and PostgreSQL.
DEPLOY_DEFAULTS = {
    "LLMPROXY_REDIS_URL": "redis://127.0.0.1:6379/0",
    "LLMPROXY_DATABASE_URL": "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres",
}


@nox.session
def deploy(session: nox.Session) -> None:
    """The deployment on one machine: migrate, then the gateway's Procfile under honcho (real services)."""
    import os

    install_workspace(session)
    env = {name: os.environ.get(name, default) for name, default in DEPLOY_DEFAULTS.items()}
    session.run("llmproxy-gateway", "migrate", env=env)
    session.run("honcho", "start", "-f", "examples/gateway/Procfile", *session.posargs, env=env)


@nox.session
def bench(session: nox.Session) -> None:
    """Run a benchmark: `nox -s bench -- quota` runs bench/bench_quota.py (real services needed)."""
    install_workspace(session)  # the peers come with the packages' extras (quota[bench]: limits)
    for name in session.posargs or ["ratelimit_config"]:
        session.run("python", f"bench/bench_{name}.py")
