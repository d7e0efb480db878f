"""The gate's significance test: Diebold-Mariano on the per-day test errors (`test_errors.json`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from retrain.gate import GateError, decide, decide_with_test_errors
from retrain.monitoring.significance import (
    SignificanceError,
    diebold_mariano,
    regularized_beta,
    student_t_cdf,
)


@pytest.mark.parametrize("df", [1, 3, 9.5, 30, 184])
@pytest.mark.parametrize("t", [-8.0, -2.1, -0.3, 0.0, 0.7, 1.96, 5.0])
def test_student_t_cdf_matches_scipy(t: float, df: float) -> None:
    assert student_t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), abs=1e-12)


def test_regularized_beta_matches_scipy() -> None:
    for a, b, x in ((0.5, 0.5, 0.3), (2.0, 5.0, 0.9), (50.0, 0.5, 0.99), (3.0, 3.0, 0.0)):
        assert regularized_beta(a, b, x) == pytest.approx(stats.beta.cdf(x, a, b), abs=1e-12)


def test_dm_without_lags_is_the_textbook_hln_statistic() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1.0, 120), rng.normal(0, 1.2, 120)
    result = diebold_mariano(a, b, lags=0)
    d = np.abs(a) - np.abs(b)
    n = d.size
    dm = d.mean() / math.sqrt(np.mean((d - d.mean()) ** 2) / n)
    expected = dm * math.sqrt((n - 1) / n)  # HLN at horizon 1
    assert result.statistic == pytest.approx(expected)
    assert result.p_a_better == pytest.approx(stats.t.cdf(expected, n - 1))
    assert result.p_a_better + result.p_a_worse == pytest.approx(1.0)
    assert result.lags == 0 and result.n == 120


def test_dm_tells_a_clearly_better_forecast_from_noise() -> None:
    rng = np.random.default_rng(1)
    truth = rng.normal(0, 1, 200)
    better = diebold_mariano(0.5 * truth, truth)
    assert better.p_a_better < 1e-6 and better.statistic < 0
    same = diebold_mariano(truth, truth)
    assert (same.statistic, same.p_a_better, same.p_a_worse) == (0.0, 1.0, 1.0)
    with pytest.raises(SignificanceError, match="one error of each per day"):
        diebold_mariano(truth, truth[:-1])
    with pytest.raises(SignificanceError, match="at least 10"):
        diebold_mariano(truth[:5], truth[:5])


def _errors(actual: np.ndarray, model: np.ndarray, naive: np.ndarray, champion: np.ndarray | None) -> dict:
    return {
        "dates": [f"d{i}" for i in range(actual.size)],
        "actual": actual.tolist(),
        "model": (actual + model).tolist(),
        "naive": (actual + naive).tolist(),
        "champion": None if champion is None else (actual + champion).tolist(),
    }


def _metrics(errors: dict) -> dict[str, float]:
    actual = np.array(errors["actual"])
    out = {k: float(np.mean(np.abs(np.array(errors[k]) - actual))) for k in ("model", "naive")}
    metrics = {"mae": out["model"], "naive_mae": out["naive"]}
    if errors["champion"] is not None:
        metrics["champion_mae"] = float(np.mean(np.abs(np.array(errors["champion"]) - actual)))
    return metrics


def test_a_challenger_6_percent_worse_than_naive_by_noise_is_not_called_worse() -> None:
    rng = np.random.default_rng(2)
    actual = 100 + rng.normal(0, 1, 185).cumsum()
    naive = rng.normal(0, 1, 185)
    model = naive * 1.06 * rng.choice([0.5, 1.5], 185)  # noisy; mae about 6 % above naive's
    errors = _errors(actual, model, naive, None)
    metrics = _metrics(errors)
    assert metrics["mae"] > metrics["naive_mae"] * 1.05
    assert not decide(metrics, has_champion=False, baseline_margin=0.05).deploy  # the fixed margin rejects
    decision = decide_with_test_errors(metrics, errors, has_champion=False, baseline_margin=0.05)
    assert decision.deploy
    assert "baseline check passed" in decision.reasons[0] and "not significantly worse" in decision.reasons[0]
    assert (
        "Diebold-Mariano" in decision.reasons[0] and "p(worse than naive x 1.05) = 0." in decision.reasons[0]
    )


def test_the_baseline_margin_is_the_tolerated_band_of_the_test() -> None:
    # 1 % worse than persistence every day: significant against persistence itself, well inside 5 %.
    rng = np.random.default_rng(6)
    actual = 100 + rng.normal(0, 1, 185).cumsum()
    naive = rng.normal(0, 1, 185)
    errors = _errors(actual, naive * 1.01, naive, None)
    strict = decide_with_test_errors(_metrics(errors), errors, has_champion=False, baseline_margin=0.0)
    assert not strict.deploy and "p(worse than naive x 1) = 0.0000" in strict.reasons[0]
    tolerant = decide_with_test_errors(_metrics(errors), errors, has_champion=False, baseline_margin=0.05)
    assert tolerant.deploy and "x (1 + 0.05)" in tolerant.reasons[0]


def test_a_clearly_worse_challenger_fails_the_baseline_check() -> None:
    rng = np.random.default_rng(3)
    actual = 100 + rng.normal(0, 1, 185).cumsum()
    naive = rng.normal(0, 1, 185)
    errors = _errors(actual, naive * 1.6, naive, None)
    decision = decide_with_test_errors(_metrics(errors), errors, has_champion=False, baseline_margin=0.05)
    assert not decision.deploy and decision.reasons[0].startswith("baseline check failed")


def test_champion_check_needs_a_significantly_better_challenger() -> None:
    rng = np.random.default_rng(4)
    actual = 100 + rng.normal(0, 1, 185).cumsum()
    naive = rng.normal(0, 1, 185)
    champion = naive * 0.99
    identical = _errors(actual, champion, naive, champion)
    decision = decide_with_test_errors(
        _metrics(identical), identical, has_champion=True, baseline_margin=0.05
    )
    assert not decision.deploy
    assert (
        "champion check (superiority) failed" in decision.reasons[1]
        and "not significantly better" in decision.reasons[1]
    )
    slightly = _errors(actual, champion * rng.choice([0.7, 1.28], 185), naive, champion)  # noise, not skill
    assert not decide_with_test_errors(
        _metrics(slightly), slightly, has_champion=True, baseline_margin=0.05
    ).deploy
    clearly = _errors(actual, champion * 0.8, naive, champion)
    decision = decide_with_test_errors(_metrics(clearly), clearly, has_champion=True, baseline_margin=0.05)
    assert decision.deploy and "champion check (superiority) passed" in decision.reasons[1]
    forced = decide_with_test_errors(
        _metrics(identical), identical, has_champion=True, baseline_margin=0.05, force=True
    )
    assert forced.deploy and forced.forced and "would NOT deploy" in forced.reasons[-1]


def test_without_test_errors_the_fixed_margin_applies_and_says_so() -> None:
    metrics = {"mae": 1.0, "naive_mae": 1.0, "champion_mae": 1.1}
    for test_errors in (
        None,
        {"actual": [1.0]},
        {"actual": [1.0] * 20, "model": [1.0] * 19, "naive": [1.0] * 20},
    ):
        decision = decide_with_test_errors(metrics, test_errors, has_champion=True, baseline_margin=0.05)
        assert decision.deploy == decide(metrics, has_champion=True, baseline_margin=0.05).deploy
        assert decision.reasons[0].startswith("no significance test")
    with pytest.raises(GateError, match="significance level"):
        decide_with_test_errors(metrics, None, has_champion=False, baseline_margin=0.05, level=1.5)
