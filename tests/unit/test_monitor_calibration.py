"""Thresholds calibrated to the target on EVERY ticker, not on the pooled rate (issue 13: "at most one
false alarm per ticker per year"; `retrain.monitoring.calibration`)."""

from __future__ import annotations

import numpy as np
import pytest

from retrain.market_data import fetch_prices
from retrain.monitoring.calibration import (
    CUSUM_REFERENCE_DAYS,
    Calibration,
    calibrate,
    calibrate_cusum_runs,
    calibrate_drift,
    false_alarms_per_year,
    shuffles,
)
from retrain.monitoring.detectors import (
    CusumReference,
    alarm_days,
    cusum_alarm_days,
    rolling_drift_statistics,
)


def test_a_ticker_above_the_target_raises_the_threshold_although_the_pooled_rate_meets_it() -> None:
    # One trading year per run; QUIET never alarms, NOISY alarms twice a year until h = 3.
    alarms: dict[tuple[object, float], int] = {("QUIET", 1.0): 0, ("QUIET", 2.0): 0, ("QUIET", 3.0): 0}
    alarms |= {("NOISY", 1.0): 2, ("NOISY", 2.0): 2, ("NOISY", 3.0): 1}
    runs = ["QUIET", "NOISY"]
    pooled = calibrate(runs, lambda run, h: alarms[run, h], lambda run: 252, [1.0, 2.0, 3.0])
    assert pooled.threshold == 1.0 and pooled.false_alarms_per_year == 1.0  # NOISY at 2 a year passes
    per_ticker = calibrate(
        runs, lambda run, h: alarms[run, h], lambda run: 252, [1.0, 2.0, 3.0], group_of=lambda run: run
    )
    assert per_ticker == Calibration(
        threshold=3.0,
        false_alarms_per_year=0.5,
        alarms=1,
        days=504,
        runs=2,
        per_group={"QUIET": 0.0, "NOISY": 1.0},
    )
    assert per_ticker.worst_group == ("NOISY", 1.0) and pooled.worst_group is None
    with pytest.raises(ValueError, match="every group's rate"):
        calibrate(runs, lambda run, h: 2, lambda run: 252, [1.0], group_of=lambda run: run)
    with pytest.raises(ValueError, match="send at least one shuffled series"):
        calibrate([], lambda run, h: 0, lambda run: 252, [1.0])


def _ar1(rng: np.random.Generator, days: int, phi: float) -> np.ndarray:
    """Unit-variance AR(1): positive autocorrelation makes a CUSUM climb more often than white noise."""
    noise = rng.normal(size=days)
    series = np.empty(days)
    series[0] = noise[0]
    for i in range(1, days):
        series[i] = phi * series[i - 1] + np.sqrt(1 - phi**2) * noise[i]
    return series


def _cusum_rate(runs: list[np.ndarray], threshold: float) -> float:
    alarms = 0
    days = 0
    for run in runs:
        reference = CusumReference.from_differential(run[:CUSUM_REFERENCE_DAYS])
        watched = run[CUSUM_REFERENCE_DAYS:]
        alarms += len(cusum_alarm_days(watched, reference, threshold, 20))
        days += watched.size
    return false_alarms_per_year(alarms, days)


def test_cusum_calibration_holds_every_ticker_to_the_target() -> None:
    rng = np.random.default_rng(7)
    days = CUSUM_REFERENCE_DAYS + 4 * 252
    quiet = [_ar1(rng, days, 0.0) for _ in range(3)]
    noisy = [_ar1(rng, days, 0.5) for _ in range(3)]
    runs = quiet + noisy
    groups = ["QUIET"] * 3 + ["NOISY"] * 3

    result = calibrate_cusum_runs(runs, groups=groups)
    pooled = calibrate_cusum_runs(runs)
    # The pooled rule stops where NOISY still alarms more than once a year; the per-ticker rule goes on.
    assert pooled.false_alarms_per_year <= 1.0 < _cusum_rate(noisy, pooled.threshold)
    assert result.threshold > pooled.threshold
    # The reported per-ticker rates are the detector's own, recomputed here, and all meet the target ...
    assert result.per_group == {
        "QUIET": pytest.approx(_cusum_rate(quiet, result.threshold)),
        "NOISY": pytest.approx(_cusum_rate(noisy, result.threshold)),
    }
    assert max(result.per_group.values()) <= 1.0 and result.worst_group is not None
    assert result.worst_group[0] == "NOISY"
    # ... and it is the smallest such threshold: a little lower, NOISY breaks the target again.
    assert _cusum_rate(noisy, result.threshold / 1.05) > 1.0
    with pytest.raises(ValueError, match="one group per run"):
        calibrate_cusum_runs(runs, groups=groups[:-1])


def test_drift_calibration_reports_and_meets_the_target_per_ticker() -> None:
    returns = {
        ticker: np.diff(np.log(fetch_prices(ticker, source="sample")["Close"].to_numpy()))
        for ticker in ("IBM", "GOOG")
    }
    result = calibrate_drift(returns, shuffle_count=1, seed=0)
    assert set(result.per_group) == {"IBM", "GOOG"} and result.runs == 2
    for i, (ticker, series) in enumerate(returns.items()):
        statistics = rolling_drift_statistics(shuffles(series, 1, i)[0])
        rate = false_alarms_per_year(len(alarm_days(statistics, result.threshold, 20)), statistics.size)
        assert result.per_group[ticker] == pytest.approx(rate) and rate <= 1.0
