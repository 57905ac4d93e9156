"""Fixtures: a private Telemetry on the SDK's in-memory exporters and reader (observability_recorded)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The tests import their helper modules by name (pytest runs with --import-mode=importlib).
sys.path.insert(0, str(Path(__file__).parent))

from observability_recorded import Recorded, make_recorded

from llmproxy.observability import CardinalityOptions


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    rec = make_recorded(service_name="test-service", service_version="1.2.3", environment="test")
    yield rec
    rec.telemetry.shutdown()


@pytest.fixture
def capped() -> Iterator[Recorded]:
    """Identity labels on, at most 3 values per label."""
    rec = make_recorded(
        cardinality=CardinalityOptions(max_values=3, identity_labels=frozenset({"tenant", "api_key", "user"}))
    )
    yield rec
    rec.telemetry.shutdown()
