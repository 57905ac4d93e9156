"""Bounded cardinality: no identity labels unless configured, then N values per label, the rest other."""

from __future__ import annotations

import threading

import pytest
from observability_recorded import Recorded, make_recorded

from llmproxy.observability import BoundedValues, CardinalityOptions


def test_identity_labels_appear_only_when_configured(recorded: Recorded, capped: Recorded) -> None:
    for rec in (recorded, capped):
        rec.telemetry.metrics.record_request(
            "t1", "m", "openai", 1, 1, 0.1, True, api_key_id="k1", user_id="u1"
        )
    [(plain, _)] = recorded.points("llmproxy.requests")
    assert {"llmproxy.tenant.id", "llmproxy.api_key.id", "llmproxy.user.id"}.isdisjoint(plain)
    [(labelled, _)] = capped.points("llmproxy.requests")
    assert (
        labelled["llmproxy.tenant.id"],
        labelled["llmproxy.api_key.id"],
        labelled["llmproxy.user.id"],
    ) == (
        "t1",
        "k1",
        "u1",
    )


def test_past_the_cap_values_become_other_and_are_counted(capped: Recorded) -> None:
    for index in range(10):
        capped.telemetry.metrics.record_request(f"tenant-{index}", "m", "openai", 1, 1, 0.1, True)
    counts = {a["llmproxy.tenant.id"]: v for a, v in capped.points("llmproxy.requests")}
    assert counts == {"tenant-0": 1, "tenant-1": 1, "tenant-2": 1, "other": 7}
    overflow = {
        (a["llmproxy.metric"], a["llmproxy.attribute"]): v
        for a, v in capped.points("llmproxy.telemetry.cardinality_overflow")
    }
    assert overflow == {("llmproxy", "llmproxy.tenant.id"): 7}


def test_an_admitted_value_stays_itself_after_the_cap_is_reached(capped: Recorded) -> None:
    for name in ("a", "b", "c", "d", "a"):
        capped.telemetry.metrics.record_request(name, "m", "openai", 1, 1, 0.1, True)
    counts = {a["llmproxy.tenant.id"]: v for a, v in capped.points("llmproxy.requests")}
    assert counts == {"a": 2, "b": 1, "c": 1, "other": 1}


def test_models_are_capped_too_and_unknown_models_become_other_at_once() -> None:
    rec = make_recorded(cardinality=CardinalityOptions(known_models=frozenset({"gpt-4o"})))
    try:
        for model in ("gpt-4o", "made-up-1", "made-up-2"):
            rec.telemetry.metrics.record_request(None, model, "openai", 1, 1, 0.1, True)
        counts = {a["gen_ai.request.model"]: v for a, v in rec.points("llmproxy.requests")}
        assert counts == {"gpt-4o": 1, "other": 2}
        [(attributes, value)] = rec.points("llmproxy.telemetry.cardinality_overflow")
        assert attributes["llmproxy.attribute"] == "gen_ai.request.model"
        assert value == 2
    finally:
        rec.telemetry.shutdown()


def test_the_default_cap_is_a_thousand_values_per_label() -> None:
    rec = make_recorded(cardinality=CardinalityOptions(identity_labels=frozenset({"tenant"})))
    try:
        for index in range(1005):
            rec.telemetry.metrics.record_request(f"t{index}", "m", "openai", 0, 0, 0.0, True)
        points = rec.points("llmproxy.requests")
        assert len(points) == 1001
        assert dict((a["llmproxy.tenant.id"], v) for a, v in points)["other"] == 5
    finally:
        rec.telemetry.shutdown()


def test_threads_racing_for_the_last_places_never_admit_more_than_the_cap() -> None:
    bounded = BoundedValues(50)
    barrier = threading.Barrier(8)

    def admit(offset: int) -> None:
        barrier.wait()
        for index in range(100):
            bounded(f"v{offset}-{index}")

    threads = [threading.Thread(target=admit, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert bounded.admitted == 50
    assert bounded.overflowed == 800 - 50


@pytest.mark.parametrize("limit", [0, -1])
def test_a_cap_below_one_is_refused(limit: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BoundedValues(limit)
    with pytest.raises(ValueError, match="max_values"):
        CardinalityOptions(max_values=limit)
