"""The Unleash client specification: every test and variantTest of every file its index.json lists.

The files are not part of the project: they are read from ``$LLMPROXY_UNLEASH_SPEC_DIR`` or from
``<repo root>/../shared/conformance/unleash-client-specification``. Without them the test skips (fails under
``CI=true``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from llmproxy.core.testing import service_unavailable
from llmproxy.flags import FeatureSet, FlagContext, Snapshot, unleash_values

ROOT = Path(__file__).resolve().parents[3]


def spec_dir() -> Path:
    configured = os.environ.get("LLMPROXY_UNLEASH_SPEC_DIR")
    return Path(configured) if configured else ROOT.parent / "shared/conformance/unleash-client-specification"


def load_cases() -> list[Any]:
    folder = spec_dir()
    index = folder / "index.json"
    if not index.is_file():
        return [pytest.param(None, None, None, id="specification-missing")]
    cases = []
    for name in json.loads(index.read_text("utf-8")):
        spec = json.loads((folder / name).read_text("utf-8"))
        for kind in ("tests", "variantTests"):
            for i, case in enumerate(spec.get(kind) or ()):
                cases.append(pytest.param(name, kind, case, id=f"{name}:{kind}[{i}]:{case['description']}"))
    return cases


_states: dict[str, Snapshot] = {}


def snapshot_of(name: str) -> Snapshot:
    if name not in _states:
        spec = json.loads((spec_dir() / name).read_text("utf-8"))
        _states[name] = Snapshot(FeatureSet.from_unleash(spec["state"]))
    return _states[name]


@pytest.mark.parametrize(("file", "kind", "case"), load_cases())
def test_unleash_client_specification(
    file: str | None, kind: str | None, case: dict[str, Any] | None
) -> None:
    if file is None or case is None:
        service_unavailable(f"the Unleash client specification is not at {spec_dir()}")
        return
    snapshot = snapshot_of(file)
    values = unleash_values(case["context"])
    if kind == "tests":
        assert snapshot.is_enabled(case["toggleName"], values) is case["expectedResult"]
    else:
        variant = snapshot.variant(case["toggleName"], values)
        expected = case["expectedResult"]
        assert variant.name == expected["name"]
        assert variant.enabled is expected["enabled"]
        assert variant.feature_enabled is expected["feature_enabled"]
        assert (variant.payload.unleash() if variant.payload else None) == expected.get("payload")


def test_the_specification_has_every_file_of_its_index() -> None:
    folder = spec_dir()
    if not (folder / "index.json").is_file():
        service_unavailable(f"the Unleash client specification is not at {folder}")
    names = json.loads((folder / "index.json").read_text("utf-8"))
    assert len(names) >= 20
    assert all((folder / name).is_file() for name in names)


def test_a_flag_context_evaluates_like_the_unleash_mapping_it_came_from() -> None:
    folder = spec_dir()
    if not (folder / "index.json").is_file():
        service_unavailable(f"the Unleash client specification is not at {folder}")
    checked = 0
    for name in json.loads((folder / "index.json").read_text("utf-8")):
        spec = json.loads((folder / name).read_text("utf-8"))
        for case in spec.get("tests") or ():
            ctx = FlagContext.from_unleash(case["context"])
            assert snapshot_of(name).is_enabled(case["toggleName"], ctx.values) is case["expectedResult"]
            checked += 1
    assert checked > 200
