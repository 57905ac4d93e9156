"""Generate sync modules from their async sources (httpcore's unasync approach).

Where a sync twin is more than a thin shell, the logic is written once, async, and the sync module is
generated from it: token replacements line by line (``async def`` -> ``def``, ``await x`` -> ``x``,
``AsyncX`` -> ``X``, ``aclose`` -> ``close``, ``asyncio.Event`` -> ``threading.Event``, ... see ``RULES``),
then ruff sorts the imports and formats the result, so the generated file passes lint like any other.

The (source, target) pairs live in one place, the root ``pyproject.toml``:

    [[tool.unasync.files]]
    source = "packages/llmproxy-core/src/llmproxy/core/_registry.py"
    target = "packages/llmproxy-core/src/llmproxy/core/_registry_sync.py"
    # optional, per file: exact text replaced before the common rules (each must match somewhere)
    replace = { "from sqlalchemy.ext.asyncio import AsyncEngine" = "from sqlalchemy.engine import Engine" }

    python scripts/unasync.py            # (re)write every target
    python scripts/unasync.py --check    # exit 1, with a diff, when a target is not what its source generates

``nox -s unasync`` runs it (``-- --check`` in CI). Write the source so that the rules give the sync code: what
differs between the two worlds beyond these tokens belongs in a small pair of hand-written primitives with the
same method names (an ``AsyncWorker`` / ``Worker`` pair, say), not in a rule.
"""

from __future__ import annotations

import argparse
import difflib
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The common rules, in order: (pattern, replacement). A pattern is a regular expression matched on word
#: boundaries (where it starts or ends with a word character), applied to every line of every source.
RULES: list[tuple[str, str]] = [
    # syntax
    (r"async def", "def"),
    (r"async with", "with"),
    (r"async for", "for"),
    (r"await ", ""),
    # protocols and decorators
    (r"__aenter__", "__enter__"),
    (r"__aexit__", "__exit__"),
    (r"__aiter__", "__iter__"),
    (r"__anext__", "__next__"),
    (r"asynccontextmanager", "contextmanager"),
    (r"AsyncIterator", "Iterator"),
    (r"AsyncIterable", "Iterable"),
    # synchronisation: a thread's primitives have the same methods (wait, set, clear, acquire, release)
    (r"import asyncio", "import threading"),
    (r"asyncio\.Event", "threading.Event"),
    (r"asyncio\.Lock", "threading.Lock"),
    # httpx-style names: close/aclose; core's flow runners; AsyncX -> X (AsyncEngine, AsyncWorker, ...)
    (r"aclose", "close"),
    (r"arun_flow", "run_flow"),
    (r"Async([A-Z][A-Za-z0-9_]*)", r"\1"),
]


def _compile(pattern: str) -> re.Pattern[str]:
    start = r"\b" if re.match(r"\w", pattern) else ""
    end = r"\b" if re.search(r"\w$", pattern) else ""
    return re.compile(start + pattern + end)


COMPILED_RULES = [(_compile(pattern), replacement) for pattern, replacement in RULES]


@dataclass
class Pair:
    source: Path
    target: Path
    replace: dict[str, str] = field(default_factory=dict)

    def header(self) -> str:
        return f"# Generated from {self.source.name} by scripts/unasync.py (`nox -s unasync`): do not edit.\n"


def load_pairs(pyproject: Path = ROOT / "pyproject.toml") -> list[Pair]:
    config = tomllib.loads(pyproject.read_text("utf-8")).get("tool", {}).get("unasync", {})
    pairs = []
    for entry in config.get("files", []):
        unknown = set(entry) - {"source", "target", "replace"}
        if unknown or "source" not in entry or "target" not in entry:
            raise SystemExit(f"unasync: [[tool.unasync.files]] needs source and target only, got {entry}")
        pairs.append(Pair(ROOT / entry["source"], ROOT / entry["target"], dict(entry.get("replace", {}))))
    return pairs


def unasync_line(line: str) -> str:
    for pattern, replacement in COMPILED_RULES:
        line = pattern.sub(replacement, line)
    return line


def unasync_text(pair: Pair, text: str) -> str:
    """The sync module for ``text`` (the source's content), before ruff."""
    for old, new in pair.replace.items():
        if old not in text:
            raise SystemExit(f"unasync: {pair.source}: the replacement of {old!r} matches nothing (stale?)")
        text = text.replace(old, new)
    return pair.header() + "".join(unasync_line(line) for line in text.splitlines(keepends=True))


def ruff(text: str, target: Path) -> str:
    """Sort the imports (``import threading`` moves below ``contextlib``) and format, as lint would."""
    for command in (["check", "--fix-only", "--exit-zero", "--quiet"], ["format", "--quiet"]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *command, "--stdin-filename", str(target), "-"],
            input=text,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if done.returncode != 0:
            raise SystemExit(f"unasync: ruff {command[0]} failed on {target}:\n{done.stderr}")
        text = done.stdout
    return text


def generate(pair: Pair) -> str:
    return ruff(unasync_text(pair, pair.source.read_text("utf-8")), pair.target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail when a target is not current")
    args = parser.parse_args(argv)
    stale = 0
    for pair in load_pairs():
        expected = generate(pair)
        target = pair.target.relative_to(ROOT)
        current = pair.target.read_text("utf-8") if pair.target.exists() else ""
        if current == expected:
            print(f"unasync: {target} is current")
        elif args.check:
            stale += 1
            print(f"unasync: {target} is not what {pair.source.relative_to(ROOT)} generates:")
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    expected.splitlines(keepends=True),
                    f"{target} (checked in)",
                    f"{target} (generated)",
                )
            )
        else:
            pair.target.write_text(expected, "utf-8")
            print(f"unasync: wrote {target}")
    if stale:
        print(f"unasync: {stale} generated file(s) out of date: run `nox -s unasync` and commit the result")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
