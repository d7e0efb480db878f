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
    assert "champion check (superiority) passed: mae 0.9 < champion_mae 0.95" in better.reasons
    worse = decide(
        {"mae": 0.96, "naive_mae": 1.0, "champion_mae": 0.95}, has_champion=True, baseline_margin=0.05
    )
    assert not worse.deploy
    assert "champion check (superiority) failed: mae 0.96 >= champion_mae 0.95" in worse.reasons


def test_a_tie_with_the_champion_is_not_an_improvement() -> None:
    d = decide({"mae": 0.95, "naive_mae": 1.0, "champion_mae": 0.95}, has_champion=True, baseline_margin=0.05)
    assert not d.deploy


def test_beating_the_champion_is_not_enough_when_the_baseline_fails() -> None:
    d = decide({"mae": 1.2, "naive_mae": 1.0, "champion_mae": 1.5}, has_champion=True, baseline_margin=0.05)
    assert not d.deploy
    assert any(r.startswith("baseline check failed") for r in d.reasons)
    assert any(r.startswith("champion check (superiority) passed") for r in d.reasons)


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


def test_metric_names_are_settings_not_constants() -> None:
    from retrain.gate import GateMetrics

    names = GateMetrics.from_settings(
        {
            "RETRAIN_GATE_METRIC": "rmse",
            "RETRAIN_GATE_BASELINE_METRIC": "naive_rmse",
            "RETRAIN_GATE_CHAMPION_METRIC": "champion_rmse",
        }
    )
    metrics = {"mae": 99.0, "naive_mae": 1.0, "rmse": 0.9, "naive_rmse": 1.0, "champion_rmse": 0.95}
    d = decide(metrics, has_champion=True, baseline_margin=0.05, names=names)
    assert d.deploy  # judged on rmse; the terrible mae is not looked at
    assert "baseline check passed: rmse 0.9 <= naive_rmse 1 x (1 + 0.05) = 1.05" in d.reasons
    assert "champion check (superiority) passed: rmse 0.9 < champion_rmse 0.95" in d.reasons
    with pytest.raises(GateError, match="no finite 'rmse'.*metrics.json with rmse, naive_rmse"):
        decide({"mae": 1.0}, has_champion=False, baseline_margin=0.05, names=names)


def test_higher_is_better_flips_both_checks() -> None:
    from retrain.gate import GateMetrics

    names = GateMetrics("hit_rate", "naive_hit_rate", "champion_hit_rate", higher_is_better=True)
    good = decide(
        {"hit_rate": 0.55, "naive_hit_rate": 0.5, "champion_hit_rate": 0.52},
        has_champion=True,
        baseline_margin=0.05,
        names=names,
    )
    assert good.deploy
    assert (
        "baseline check passed: hit_rate 0.55 >= naive_hit_rate 0.5 - 0.05 x |naive_hit_rate| = 0.475"
        in good.reasons
    )
    assert "champion check (superiority) passed: hit_rate 0.55 > champion_hit_rate 0.52" in good.reasons
    worse = decide(
        {"hit_rate": 0.46, "naive_hit_rate": 0.5, "champion_hit_rate": 0.46},
        has_champion=True,
        baseline_margin=0.05,
        names=names,
    )
    assert not worse.deploy
    assert (
        "baseline check failed: hit_rate 0.46 < naive_hit_rate 0.5 - 0.05 x |naive_hit_rate| = 0.475"
        in worse.reasons
    )
    assert "champion check (superiority) failed: hit_rate 0.46 <= champion_hit_rate 0.46" in worse.reasons


def test_gate_settings_are_validated_with_what_to_send() -> None:
    from retrain.gate import GateMetrics

    assert GateMetrics.from_settings({}) == GateMetrics("mae", "naive_mae", "champion_mae", False)
    assert GateMetrics.from_settings({"RETRAIN_GATE_DIRECTION": "Higher"}).higher_is_better
    with pytest.raises(GateError, match="use lower .* or higher"):
        GateMetrics.from_settings({"RETRAIN_GATE_DIRECTION": "up"})
    with pytest.raises(GateError, match="three different names"):
        GateMetrics.from_settings({"RETRAIN_GATE_BASELINE_METRIC": "mae"})
    with pytest.raises(GateError, match="name 'a b' is invalid"):
        GateMetrics(metric="a b")
    # The orchestration input round-trips it.
    names = GateMetrics("rmse", "naive_rmse", "champion_rmse")
    assert GateMetrics.from_dict(json.loads(json.dumps(names.to_dict()))) == names
    assert GateMetrics.from_dict({}) == GateMetrics()
