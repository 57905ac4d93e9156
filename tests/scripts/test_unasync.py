"""scripts/unasync.py: the rules that turn an async source into its sync twin."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def unasync() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unasync_script", ROOT / "scripts" / "unasync.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def pair(unasync: ModuleType, replace: dict[str, str] | None = None) -> object:
    return unasync.Pair(ROOT / "pkg" / "_thing.py", ROOT / "pkg" / "_thing_sync.py", replace or {})


ASYNC_SOURCE = """import asyncio

from ._workers import AsyncWorker


class AsyncThing:
    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self._worker = AsyncWorker(self._run, "thing")

    async def __aenter__(self) -> AsyncThing:
        return self

    async def _run(self) -> None:
        async with self._lock:
            async for item in self._items():
                await self._handle(await item.read())
        await self._client.aclose()
        return await arun_flow(self._flow(), self._perform)
"""

SYNC_OUTPUT = """import threading

from ._workers import Worker


class Thing:
    def __init__(self) -> None:
        self.ready = threading.Event()
        self._worker = Worker(self._run, "thing")

    def __enter__(self) -> Thing:
        return self

    def _run(self) -> None:
        with self._lock:
            for item in self._items():
                self._handle(item.read())
        self._client.close()
        return run_flow(self._flow(), self._perform)
"""


def test_the_rules_turn_async_code_into_its_sync_twin_under_a_generated_header(unasync: ModuleType) -> None:
    generated = unasync.unasync_text(pair(unasync), ASYNC_SOURCE)

    header, body = generated.split("\n", 1)
    assert header.startswith("# Generated from _thing.py by scripts/unasync.py")
    assert body == SYNC_OUTPUT


def test_rules_match_whole_words_only(unasync: ModuleType) -> None:
    assert unasync.unasync_line("awaited = reawait(asyncio_events, Asyncio, AsyncEngine)\n") == (
        "awaited = reawait(asyncio_events, Asyncio, Engine)\n"
    )


def test_a_file_replacement_applies_before_the_common_rules(unasync: ModuleType) -> None:
    replace = {"from sqlalchemy.ext.asyncio import AsyncEngine": "from sqlalchemy.engine import Engine"}
    source = "from sqlalchemy.ext.asyncio import AsyncEngine\n\ndef make(engine: AsyncEngine) -> None: ...\n"

    body = unasync.unasync_text(pair(unasync, replace), source).split("\n", 1)[1]

    assert body == "from sqlalchemy.engine import Engine\n\ndef make(engine: Engine) -> None: ...\n"


def test_a_file_replacement_that_matches_nothing_is_an_error(unasync: ModuleType) -> None:
    with pytest.raises(SystemExit, match="import AsyncConnection"):
        unasync.unasync_text(pair(unasync, {"import AsyncConnection": "import Connection"}), ASYNC_SOURCE)


def test_every_pair_in_the_root_pyproject_names_an_async_source_and_its_sync_target(
    unasync: ModuleType,
) -> None:
    pairs = unasync.load_pairs()

    assert pairs
    for each in pairs:
        assert each.source.exists(), each.source
        assert each.target.name == each.source.name.replace(".py", "_sync.py")
        assert each.target.read_text("utf-8").startswith(each.header())
