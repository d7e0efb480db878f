"""The quality gate: challenger vs champion vs the naive baseline, with reasons that carry the numbers."""

from __future__ import annotations

import json
import math

import pytest

from retrain.gate import GateDecision, GateError, decide


def test_first_model_needs_only_the_baseline() -> None:
    d = decide({"mae": 1.02, "naive_mae": 1.0}, has_champion=False, baseline_margin=0.05)
    assert d.deploy and not d.forced
    assert "baseline check passed: mae 1.02 <= naive_mae 1 x (1 + 0.05) = 1.05" in d.reasons
    assert any("no champion yet" in r for r in d.reasons)


def test_first_model_worse_than_baseline_beyond_margin_is_rejected() -> None:
    d = decide({"mae": 1.06, "naive_mae": 1.0}, has_champion=False, baseline_margin=0.05)
    assert not d.deploy
    assert "baseline check failed: mae 1.06 > naive_mae 1 x (1 + 0.05) = 1.05" in d.reasons


def test_baseline_limit_is_inclusive() -> None:
    assert decide({"mae": 2.0, "naive_mae": 2.0}, has_champion=False, baseline_margin=0.0).deploy
    assert decide({"mae": 1.5, "naive_mae": 1.0}, has_champion=False, baseline_margin=0.5).deploy
    assert not decide({"mae": 1.5000001, "naive_mae": 1.0}, has_champion=False, baseline_margin=0.5).deploy


def test_challenger_must_beat_the_champion() -> None:
    better = decide(
        {"mae": 0.9, "naive_mae": 1.0, "champion_mae": 0.95}, has_champion=True, baseline_margin=0.05
    )
    assert better.deploy
    assert "champion check passed: mae 0.9 < champion_mae 0.95" in better.reasons
    worse = decide(
        {"mae": 0.96, "naive_mae": 1.0, "champion_mae": 0.95}, has_champion=True, baseline_margin=0.05
    )
    assert not worse.deploy
    assert "champion check failed: mae 0.96 >= champion_mae 0.95" in worse.reasons


def test_a_tie_with_the_champion_is_not_an_improvement() -> None:
    d = decide({"mae": 0.95, "naive_mae": 1.0, "champion_mae": 0.95}, has_champion=True, baseline_margin=0.05)
    assert not d.deploy


def test_beating_the_champion_is_not_enough_when_the_baseline_fails() -> None:
    d = decide({"mae": 1.2, "naive_mae": 1.0, "champion_mae": 1.5}, has_champion=True, baseline_margin=0.05)
    assert not d.deploy
    assert any(r.startswith("baseline check failed") for r in d.reasons)
    assert any(r.startswith("champion check passed") for r in d.reasons)


def test_champion_without_champion_mae_is_rejected_with_a_reason() -> None:
    d = decide({"mae": 0.5, "naive_mae": 1.0}, has_champion=True, baseline_margin=0.05)
    assert not d.deploy
    assert any("champion_mae is missing or not finite (None)" in r for r in d.reasons)


@pytest.mark.parametrize("bad", [None, math.nan, math.inf, "x", True])
def test_bad_naive_mae_is_rejected_with_a_reason(bad: object) -> None:
    metrics = {"mae": 0.5} if bad is None else {"mae": 0.5, "naive_mae": bad}
    d = decide(metrics, has_champion=False, baseline_margin=0.05)  # type: ignore[arg-type]
    assert not d.deploy
    assert any("naive_mae is missing or not finite" in r for r in d.reasons)


def test_nan_champion_mae_is_rejected() -> None:
    d = decide(
        {"mae": 0.5, "naive_mae": 1.0, "champion_mae": math.nan}, has_champion=True, baseline_margin=0.05
    )
    assert not d.deploy


@pytest.mark.parametrize(
    "metrics", [{}, {"naive_mae": 1.0}, {"mae": math.nan, "naive_mae": 1.0}, {"mae": "abc"}]
)
def test_missing_or_nan_mae_is_an_error(metrics: dict) -> None:
    with pytest.raises(GateError, match="no finite 'mae'.*metrics.json"):
        decide(metrics, has_champion=False, baseline_margin=0.05)


@pytest.mark.parametrize("margin", [-0.1, math.nan, "5%"])
def test_bad_margin_is_an_error(margin: object) -> None:
    with pytest.raises(GateError, match="baseline_margin"):
        decide({"mae": 1.0, "naive_mae": 1.0}, has_champion=False, baseline_margin=margin)  # type: ignore[arg-type]


def test_force_deploys_a_rejected_model_and_records_the_override() -> None:
    metrics = {"mae": 2.0, "naive_mae": 1.0, "champion_mae": 1.0}
    assert not decide(metrics, has_champion=True, baseline_margin=0.05).deploy
    d = decide(metrics, has_champion=True, baseline_margin=0.05, force=True)
    assert d.deploy and d.forced
    assert (
        d.reasons[-1] == "forced: deploying regardless of the checks (the gate would NOT deploy on its own)"
    )
    assert any(r.startswith("baseline check failed") for r in d.reasons)  # the checks are still reported


def test_force_on_a_passing_model_says_so() -> None:
    d = decide({"mae": 0.5, "naive_mae": 1.0}, has_champion=False, baseline_margin=0.05, force=True)
    assert d.forced and "would deploy on its own" in d.reasons[-1]


def test_string_numbers_from_json_are_accepted() -> None:
    d = decide({"mae": "0.5", "naive_mae": "1.0"}, has_champion=False, baseline_margin=0.05)
    assert d.deploy


def test_decision_round_trips_through_json() -> None:
    d = decide({"mae": 0.9, "naive_mae": 1.0, "champion_mae": 0.95}, has_champion=True, baseline_margin=0.05)
    again = GateDecision.from_dict(json.loads(json.dumps(d.to_dict())))
    assert again == d
    assert set(d.to_dict()) == {"deploy", "reasons", "forced"}
