"""The quality gate: challenger vs champion vs the naive baseline, with reasons that carry the numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from retrain.gate import (
    BASELINE_ESTIMATE_AND_SIGNIFICANCE,
    NON_INFERIORITY,
    GateDecision,
    GateError,
    GateMetrics,
    GatePolicy,
    decide,
    decide_with_test_errors,
)
from retrain.monitoring.significance import diebold_mariano
from retrain.settings import SettingsError


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


# -- the gate's policy (issue 18): superiority, non-inferiority, the first-model rule, replay ---------------

NONINFERIOR = GatePolicy(NON_INFERIORITY, 0.01, BASELINE_ESTIMATE_AND_SIGNIFICANCE)
TODAY = GatePolicy.from_settings({})  # what a new cycle uses with the default settings


def _test_errors(model: np.ndarray, naive: np.ndarray, champion: np.ndarray | None, seed: int = 0) -> dict:
    """test_errors.json from per-day errors (forecast - actual) on a random-walk price path."""
    actual = 100 + np.random.default_rng(seed).normal(0, 1, model.size).cumsum()
    return {
        "dates": [f"d{i}" for i in range(model.size)],
        "actual": actual.tolist(),
        "model": (actual + model).tolist(),
        "naive": (actual + naive).tolist(),
        "champion": None if champion is None else (actual + champion).tolist(),
    }


def _maes(model: np.ndarray, naive: np.ndarray, champion: np.ndarray | None) -> dict[str, float]:
    metrics = {"mae": float(np.mean(np.abs(model))), "naive_mae": float(np.mean(np.abs(naive)))}
    if champion is not None:
        metrics["champion_mae"] = float(np.mean(np.abs(champion)))
    return metrics


def test_the_policy_settings_default_to_superiority_with_the_estimate_baseline_and_are_validated() -> None:
    assert GatePolicy("superiority", 0.01, "estimate-and-significance") == TODAY  # bench_policies.py chose it
    assert (
        GatePolicy.from_settings({"RETRAIN_GATE_POLICY": " Non-Inferiority "}).champion == "non-inferiority"
    )
    margin = GatePolicy.from_settings(
        {"RETRAIN_GATE_POLICY": "non-inferiority", "RETRAIN_GATE_NONINFERIORITY_MARGIN": "0.03"}
    )
    assert margin.noninferiority_margin == 0.03 and margin.describe() == "non-inferiority, margin 0.03"
    with pytest.raises(SettingsError, match="'better' is unknown; use superiority or non-inferiority"):
        GatePolicy.from_settings({"RETRAIN_GATE_POLICY": "better"})
    with pytest.raises(SettingsError, match="RETRAIN_GATE_NONINFERIORITY_MARGIN='1%' is not a number"):
        GatePolicy.from_settings({"RETRAIN_GATE_NONINFERIORITY_MARGIN": "1%"})
    with pytest.raises(SettingsError, match=r"use a fraction in \[0, 1\), e.g. 0.01"):
        GatePolicy.from_settings({"RETRAIN_GATE_NONINFERIORITY_MARGIN": "1.5"})
    # No arguments: the gate before policies existed (what a replayed input without the fields gets).
    assert GatePolicy() == GatePolicy("superiority", 0.01, "significance")


def test_fixed_margin_non_inferiority_tolerates_the_margin_and_no_more() -> None:
    slightly_worse = {"mae": 0.955, "naive_mae": 1.0, "champion_mae": 0.95}  # 0.5 % worse than the champion
    assert not decide(slightly_worse, has_champion=True, baseline_margin=0.05).deploy  # superiority
    d = decide(slightly_worse, has_champion=True, baseline_margin=0.05, policy=NONINFERIOR)
    assert d.deploy
    assert (
        "champion check (non-inferiority, margin 0.01) passed: mae 0.955 <= champion_mae 0.95 x (1 + 0.01) = 0.9595"
        in d.reasons
    )
    worse = decide(
        {**slightly_worse, "mae": 0.96}, has_champion=True, baseline_margin=0.05, policy=NONINFERIOR
    )
    assert not worse.deploy
    assert (
        "champion check (non-inferiority, margin 0.01) failed: mae 0.96 > champion_mae 0.95 x (1 + 0.01) = 0.9595"
        in worse.reasons
    )
    names = GateMetrics("hit_rate", "naive_hit_rate", "champion_hit_rate", higher_is_better=True)
    scores = {"hit_rate": 0.515, "naive_hit_rate": 0.5, "champion_hit_rate": 0.52}
    assert not decide(scores, has_champion=True, baseline_margin=0.05, names=names).deploy
    higher = decide(scores, has_champion=True, baseline_margin=0.05, names=names, policy=NONINFERIOR)
    assert higher.deploy
    assert (
        "champion check (non-inferiority, margin 0.01) passed: hit_rate 0.515 >= champion_hit_rate 0.52 - 0.01 x |champion_hit_rate| = 0.5148"
        in higher.reasons
    )


def test_non_inferiority_deploys_an_equally_good_challenger_that_superiority_keeps_out() -> None:
    rng = np.random.default_rng(11)
    naive = rng.normal(0, 1, 187)
    champion = naive * 0.98
    model = champion * rng.choice([0.7, 1.3], 187)  # as good as the champion on average, by noise
    errors, metrics = _test_errors(model, naive, champion), _maes(model, naive, champion)
    superiority = decide_with_test_errors(metrics, errors, has_champion=True, baseline_margin=0.05)
    assert not superiority.deploy
    assert superiority.reasons[1].startswith("champion check (superiority) failed")
    assert "not significantly better" in superiority.reasons[1]
    d = decide_with_test_errors(metrics, errors, has_champion=True, baseline_margin=0.05, policy=NONINFERIOR)
    assert d.deploy, d.reasons
    expected = diebold_mariano(model, champion * 1.01)  # the champion's errors scaled by (1 + margin)
    assert expected.p_a_worse >= 0.05
    assert d.reasons[1] == (
        f"champion check (non-inferiority, margin 0.01) passed: mae {metrics['mae']:.6g} vs champion_mae "
        f"{metrics['champion_mae']:.6g} x (1 + 0.01), Diebold-Mariano {expected.statistic:.3f} (n=187), "
        f"p(worse than champion x 1.01) = {expected.p_a_worse:.4f} >= 0.05: not significantly worse"
    )


def test_non_inferiority_rejects_a_challenger_significantly_worse_than_the_champion() -> None:
    rng = np.random.default_rng(12)
    naive = rng.normal(0, 1, 187)
    champion = naive * 0.9
    model = champion * 1.08 * rng.choice([0.9, 1.1], 187)  # 8 % worse than the champion, inside naive x 1.05
    errors, metrics = _test_errors(model, naive, champion), _maes(model, naive, champion)
    assert metrics["mae"] <= metrics["naive_mae"] * 1.05  # the baseline check alone would let it through
    d = decide_with_test_errors(metrics, errors, has_champion=True, baseline_margin=0.05, policy=NONINFERIOR)
    assert not d.deploy
    assert d.reasons[0].startswith("baseline check passed")
    expected = diebold_mariano(model, champion * 1.01)
    assert expected.p_a_worse < 0.05
    assert d.reasons[1].startswith("champion check (non-inferiority, margin 0.01) failed")
    assert f"Diebold-Mariano {expected.statistic:.3f}" in d.reasons[1]
    assert f"p(worse than champion x 1.01) = {expected.p_a_worse:.4f} < 0.05" in d.reasons[1]
    # A wider margin tolerates it: the margin is the band of the test.
    wide = GatePolicy(NON_INFERIORITY, 0.15, BASELINE_ESTIMATE_AND_SIGNIFICANCE)
    assert decide_with_test_errors(
        metrics, errors, has_champion=True, baseline_margin=0.05, policy=wide
    ).deploy


def test_without_test_errors_the_fixed_margin_carries_the_policy() -> None:
    metrics = {"mae": 0.955, "naive_mae": 1.0, "champion_mae": 0.95}
    d = decide_with_test_errors(metrics, None, has_champion=True, baseline_margin=0.05, policy=NONINFERIOR)
    assert d.deploy and d.reasons[0].startswith("no significance test")
    assert d.reasons[2].startswith("champion check (non-inferiority, margin 0.01) passed")
    first = decide_with_test_errors(
        metrics, None, has_champion=False, baseline_margin=0.05, policy=NONINFERIOR
    )
    assert first.reasons[-1] == (
        "no champion yet: only the baseline check applies (the non-inferiority, margin 0.01 policy judges "
        "later challengers)"
    )


def test_the_first_model_rule_needs_the_point_estimate_within_the_margin() -> None:
    # 8 % worse than persistence, with noise: the test cannot call it worse, the estimate is beyond 5 %.
    rng = np.random.default_rng(0)
    naive = rng.normal(0, 1, 185)
    model = naive * 1.06 * rng.choice([0.5, 1.5], 185)
    errors, metrics = _test_errors(model, naive, None), _maes(model, naive, None)
    assert metrics["mae"] > metrics["naive_mae"] * 1.05
    old = decide_with_test_errors(metrics, errors, has_champion=False, baseline_margin=0.05)
    assert old.deploy and "not significantly worse" in old.reasons[0]  # the rule before policies
    new = decide_with_test_errors(metrics, errors, has_champion=False, baseline_margin=0.05, policy=TODAY)
    assert not new.deploy
    limit = metrics["naive_mae"] * 1.05
    assert new.reasons[0].startswith(
        f"baseline check failed: mae {metrics['mae']:.6g} > naive_mae {metrics['naive_mae']:.6g} x (1 + 0.05) "
        f"= {limit:.6g} (point estimate beyond the margin); Diebold-Mariano "
    )
    assert "p(worse than naive x 1.05) = " in new.reasons[0]  # the statistic and p-value as before
    # Within the margin it passes, and a clearly worse model fails under both rules.
    within = naive * 1.03 * rng.choice([0.9, 1.1], 185)
    ok = decide_with_test_errors(
        _maes(within, naive, None),
        _test_errors(within, naive, None),
        has_champion=False,
        baseline_margin=0.05,
        policy=TODAY,
    )
    assert ok.deploy and ok.reasons[0].startswith("baseline check passed: mae")
    bad = naive * 1.6
    for policy in (GatePolicy(), TODAY):
        assert not decide_with_test_errors(
            _maes(bad, naive, None),
            _test_errors(bad, naive, None),
            has_champion=False,
            baseline_margin=0.05,
            policy=policy,
        ).deploy


def test_the_first_model_rule_has_power_on_real_returns() -> None:
    """Seeded simulation on the bundled closes (bench/bench_gate.py prints the full table): a model 10 %
    worse than persistence, its errors following persistence's with noise, on 187-day test windows."""
    from retrain.market_data import fetch_prices

    closes = [
        fetch_prices(t, "sample")["Close"].to_numpy(dtype=float) for t in ("MSFT", "AAPL", "IBM", "GOOG")
    ]
    rng = np.random.default_rng(0)

    def pass_rates(scale: float, trials: int = 200) -> tuple[float, float]:
        passed = [0, 0]
        for i in range(trials):
            series = closes[i % len(closes)]
            start = int(rng.integers(0, series.size - 188))
            today, actual = series[start : start + 187], series[start + 1 : start + 188]
            naive = today - actual
            model = naive * scale * rng.choice([0.5, 1.5], 187)
            errors = {"actual": actual.tolist(), "model": (actual + model).tolist(), "naive": today.tolist()}
            metrics = _maes(model, naive, None)
            for k, policy in enumerate((GatePolicy(), TODAY)):
                decision = decide_with_test_errors(
                    metrics, errors, has_champion=False, baseline_margin=0.05, policy=policy
                )
                passed[k] += decision.deploy
        return passed[0] / trials, passed[1] / trials

    old_worse, new_worse = pass_rates(1.10)
    old_equal, new_equal = pass_rates(1.00)
    print(
        f"10 % worse passes: old {old_worse:.1%}, new {new_worse:.1%}; as good: old {old_equal:.1%}, new {new_equal:.1%}"
    )
    assert old_worse > 0.5  # the rule before policies let most of them through
    assert new_worse < 0.3  # the new rule fails most of them
    assert new_equal > 0.7  # and still lets most models as good as persistence serve


def test_a_cycle_input_without_the_policy_fields_gets_the_old_gate() -> None:
    """Replay: an orchestration input written by the code before gate policies has none of the fields."""
    from retrain.workflow import CycleInput

    today = CycleInput.from_settings("MSFT", "timer", {})
    data = json.loads(json.dumps(today.to_dict()))
    assert (data["gate_policy"], data["gate_noninferiority_margin"], data["gate_baseline_rule"]) == (
        "superiority",
        0.01,
        "estimate-and-significance",
    )
    assert CycleInput.from_dict(data).gate_policy_of() == TODAY
    before = {
        k: v
        for k, v in data.items()
        if k not in ("gate_policy", "gate_noninferiority_margin", "gate_baseline_rule")
    }
    assert CycleInput.from_dict(before).gate_policy_of() == GatePolicy("superiority", 0.01, "significance")
    chosen = CycleInput.from_settings("MSFT", "timer", {"RETRAIN_GATE_POLICY": "superiority"})
    assert chosen.gate_policy_of() == GatePolicy("superiority", 0.01, "estimate-and-significance")
    with pytest.raises(SettingsError, match="use superiority or non-inferiority"):
        CycleInput.from_settings("MSFT", "timer", {"RETRAIN_GATE_POLICY": "strict"})
