"""The calibration's nulls that keep volatility clustering (`retrain.monitoring.nulls`) and the live drift
geometry (`retrain.monitoring.calibration.LivePath`, `calibrate_live_drift`), issue 18."""

from __future__ import annotations

import numpy as np
import pytest

from retrain.monitoring.calibration import (
    DEFAULT_THRESHOLDS,
    LivePath,
    calibrate_live_drift,
    live_false_alarms_per_year,
    window_drift_statistics,
)
from retrain.monitoring.detectors import alarm_days, drift_check
from retrain.monitoring.nulls import GarchT, fit_garch_t, simulate_garch_t, stationary_bootstrap

# About MSFT 2000-2013 (bench/bench_monitor.py prints the fit): persistent volatility, fat tails.
MSFT_LIKE = GarchT(mu=1e-4, omega=1.6e-6, alpha=0.056, beta=0.941, nu=4.9)


def _abs_autocorrelation(returns: np.ndarray, lags: range) -> float:
    """Mean autocorrelation of |returns| over `lags`: > 0 when volatility clusters, ~0 when shuffled."""
    a = np.abs(returns) - np.abs(returns).mean()
    return float(np.mean([np.dot(a[:-lag], a[lag:]) / np.dot(a, a) for lag in lags]))


def test_garch_paths_are_seeded_and_keep_the_volatility_clustering_a_shuffle_destroys() -> None:
    path = simulate_garch_t(MSFT_LIKE, 5000, seed=3)
    assert np.array_equal(path, simulate_garch_t(MSFT_LIKE, 5000, seed=3))
    assert not np.array_equal(path, simulate_garch_t(MSFT_LIKE, 5000, seed=4))
    assert path.std() == pytest.approx(np.sqrt(MSFT_LIKE.unconditional_variance), rel=0.3)
    shuffled = np.random.default_rng(0).permutation(path)
    assert _abs_autocorrelation(path, range(1, 21)) > 0.1 > abs(_abs_autocorrelation(shuffled, range(1, 21)))


def test_the_fit_recovers_the_parameters_of_a_simulated_path() -> None:
    fitted = fit_garch_t(simulate_garch_t(MSFT_LIKE, 8000, seed=11))
    assert fitted.alpha + fitted.beta == pytest.approx(MSFT_LIKE.alpha + MSFT_LIKE.beta, abs=0.01)
    assert fitted.alpha == pytest.approx(MSFT_LIKE.alpha, abs=0.02)
    assert 3.5 < fitted.nu < 7.0
    with pytest.raises(ValueError, match="at least 250 finite"):
        fit_garch_t(np.zeros(100))


def test_a_garch_model_that_is_not_stationary_is_refused_with_what_to_send() -> None:
    with pytest.raises(ValueError, match="alpha \\+ beta < 1"):
        GarchT(mu=0.0, omega=1e-6, alpha=0.2, beta=0.8, nu=5.0)
    with pytest.raises(ValueError, match="nu > 2"):
        GarchT(mu=0.0, omega=1e-6, alpha=0.05, beta=0.9, nu=2.0)


def test_the_block_bootstrap_resamples_the_series_in_long_blocks_and_keeps_clustering() -> None:
    real = simulate_garch_t(MSFT_LIKE, 3000, seed=5)
    resampled = stationary_bootstrap(real, 6000, seed=1, mean_block=60)
    assert np.array_equal(resampled, stationary_bootstrap(real, 6000, seed=1, mean_block=60))
    assert np.isin(resampled, real).all()
    position = {value: i for i, value in enumerate(real)}
    index = np.array([position[value] for value in resampled])
    continues = np.diff(index) % real.size == 1
    assert 1 / 90 < 1 - continues.mean() < 1 / 40  # a new block about every 60 days
    assert _abs_autocorrelation(resampled, range(1, 21)) > 0.1
    with pytest.raises(ValueError, match="mean block >= 1"):
        stationary_bootstrap(real, 10, seed=0, mean_block=0)


def test_window_statistics_are_drift_check_on_each_window_ties_included() -> None:
    rng = np.random.default_rng(2)
    returns = np.round(rng.standard_t(4, size=420) * 0.01, 3)  # rounded: many ties, zeros included
    reference, watched = returns[:250], returns[250:]
    statistics = window_drift_statistics(reference, watched, 20)
    expected = [drift_check(reference, watched[s - 20 : s]).statistic for s in range(20, watched.size + 1)]
    assert statistics == pytest.approx(expected, abs=1e-12) and statistics.size == 151


def _live_alarms_day_by_day(returns: np.ndarray, threshold: float, cooldown: int) -> list[int]:
    """The live monitor, spelled out: a check each day, a retrain (reference moved) on each alarm."""
    data_end, day, alarms = 250, 270, []
    while day <= returns.size:
        if drift_check(returns[data_end - 250 : data_end], returns[day - 20 : day]).statistic > threshold:
            alarms.append(day)
            data_end, day = day, day + max(20, cooldown)
        else:
            day += 1
    return alarms


def test_the_live_geometry_moves_the_reference_to_each_alarm() -> None:
    rng = np.random.default_rng(4)
    # Volatility triples for good at day 400: a real change, then nothing new.
    returns = np.concatenate([rng.normal(0, 0.01, 400), rng.normal(0, 0.03, 1100)])
    path = LivePath(returns)
    alarms = path.alarms(0.45, cooldown=20)
    assert alarms == _live_alarms_day_by_day(returns, 0.45, 20)
    assert alarms and 400 < alarms[0] < 440
    # Once the reference has moved into the new regime the alarms stop; a reference left at the old data
    # end would keep alarming after every cooldown to the end of the series.
    assert alarms[-1] < 400 + 250 + 40
    fixed = window_drift_statistics(returns[:250], returns[250:], 20)
    assert len(alarm_days(fixed, 0.45, 20)) > 2 * len(alarms)
    assert path.monitored_days == returns.size - 270 + 1


def test_the_new_drift_threshold_holds_a_garch_null_that_the_old_one_does_not() -> None:
    paths = [LivePath(simulate_garch_t(MSFT_LIKE, 252 * 13, seed=900 + k)) for k in range(4)]
    old_rate = live_false_alarms_per_year(paths, 0.374)
    new_rate = live_false_alarms_per_year(paths, DEFAULT_THRESHOLDS.drift, DEFAULT_THRESHOLDS.cooldown_days)
    assert old_rate > 2.0  # shuffled returns said 0.9 a year; with volatility clustering it is ~3
    assert new_rate <= 1.2  # 52 ticker-years: the target (1.0) within sampling noise


def test_live_calibration_is_the_smallest_threshold_that_holds_every_ticker() -> None:
    calm = GarchT(mu=0.0, omega=2e-6, alpha=0.03, beta=0.90, nu=8.0)  # little clustering
    paths = {
        "CLUSTERED": [LivePath(simulate_garch_t(MSFT_LIKE, 252 * 8, seed=k)) for k in range(2)],
        "CALM": [LivePath(simulate_garch_t(calm, 252 * 8, seed=50 + k)) for k in range(2)],
    }
    result = calibrate_live_drift(paths)
    assert max(result.per_group.values()) <= 1.0 and result.worst_group is not None
    assert result.worst_group[0] == "CLUSTERED"  # the clustered ticker sets the threshold
    assert result.per_group["CALM"] == pytest.approx(
        live_false_alarms_per_year(paths["CALM"], result.threshold)
    )
    one_step_lower = result.threshold - 1 / 500
    assert live_false_alarms_per_year(paths["CLUSTERED"], one_step_lower) > 1.0
    with pytest.raises(ValueError, match="at least one path per ticker"):
        calibrate_live_drift({"X": []})
