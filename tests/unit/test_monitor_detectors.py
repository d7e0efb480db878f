"""The monitor's pure detectors and their calibration (`retrain.monitoring.detectors`, `.calibration`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from retrain.market_data import fetch_prices, sample_path
from retrain.monitoring.calibration import (
    DEFAULT_THRESHOLDS,
    Calibration,
    calibrate,
    calibrate_drift,
    false_alarms_per_year,
    shuffles,
)
from retrain.monitoring.detectors import (
    CusumDetector,
    CusumReference,
    DetectorError,
    alarm_days,
    cusum_alarm_days,
    cusum_path,
    data_quality,
    drift_check,
    in_cooldown,
    ks_statistic,
    log_returns,
    loss_differential,
    rolling_drift_statistics,
    split_like,
)


def test_ks_statistic_matches_scipy_with_and_without_ties() -> None:
    rng = np.random.default_rng(1)
    for a, b in (
        (rng.normal(size=250), rng.normal(0.3, 1.5, size=20)),
        (rng.integers(0, 5, size=100).astype(float), rng.integers(0, 7, size=30).astype(float)),
    ):
        assert ks_statistic(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)


def test_drift_check_sees_volatility_that_the_returns_test_alone_misses() -> None:
    rng = np.random.default_rng(7)
    reference = rng.normal(0, 0.01, 250)
    calm = rng.normal(0, 0.01, 20)
    # Same mean, five times the volatility: the threshold holds a null with volatility clustering, where a
    # month at three times the volatility of the year before is common (this draw at x3 gives D = 0.396).
    wild = rng.normal(0, 0.05, 20)
    quiet = drift_check(reference, calm)
    loud = drift_check(reference, wild)
    assert quiet.statistic < DEFAULT_THRESHOLDS.drift < loud.statistic
    assert loud.ks_abs_returns > loud.ks_returns and loud.statistic == loud.ks_abs_returns
    assert (loud.n_reference, loud.n_new) == (250, 20)


def test_rolling_drift_statistics_is_drift_check_at_each_day() -> None:
    r = np.random.default_rng(3).normal(size=300)
    rolled = rolling_drift_statistics(r, reference_days=250, window_days=20)
    assert rolled.size == 31
    assert rolled[5] == drift_check(r[5:255], r[255:275]).statistic


def test_bad_detector_input_says_what_to_send() -> None:
    with pytest.raises(DetectorError, match="at least 5"):
        drift_check(np.zeros(100), [0.1, 0.2])
    with pytest.raises(DetectorError, match="NaN or infinite"):
        ks_statistic([1.0, float("nan")], [1.0])
    with pytest.raises(DetectorError, match="paired day by day"):
        loss_differential([1.0, 2.0], [1.0])
    with pytest.raises(DetectorError, match="must be > 0"):
        log_returns([10.0, 0.0])


def test_cusum_reference_centre_makes_clipped_steps_average_zero_on_skewed_data() -> None:
    d = np.random.default_rng(11).lognormal(0, 1, 400) - 1.0  # strongly right-skewed
    ref = CusumReference.from_differential(d)
    z = np.clip((d - ref.mean) / ref.scale, -3, 3)
    assert abs(z.mean()) < 1e-9
    assert ref.mean != pytest.approx(float(np.mean(d)), rel=0.05)  # not the plain mean


def test_cusum_alarms_after_a_shift_and_not_before() -> None:
    rng = np.random.default_rng(5)
    d = rng.normal(0, 1, 600)
    d[300:] += 1.0  # the served model got worse from day 300 on
    ref = CusumReference.from_differential(d[:150])
    h = 15.0  # for Gaussian steps (the default is calibrated on real, heavier-tailed errors)
    alarms = cusum_alarm_days(d[150:], ref, h, cooldown=20)
    assert alarms and alarms[0] + 150 >= 300
    assert alarms[0] + 150 - 300 < 60
    path = cusum_path(d[150:], ref)
    assert path[:150].max() < h < path.max()


def test_the_stateful_detector_and_the_batch_function_agree() -> None:
    rng = np.random.default_rng(9)
    d = rng.standard_t(3, 500) + np.r_[np.zeros(250), np.full(250, 0.8)]
    ref = CusumReference.from_differential(d[:100])
    detector = CusumDetector(ref, threshold=6.0)
    live = [i for i, x in enumerate(d[100:]) if detector.update(float(x))]
    assert live == cusum_alarm_days(d[100:], ref, 6.0, cooldown=0)
    assert detector.days == 400


def test_alarm_days_and_cooldown() -> None:
    stats_ = np.array([0, 5, 5, 5, 0, 0, 5, 0, 0, 0, 5], dtype=float)
    assert alarm_days(stats_, 1.0, cooldown=0) == [1, 2, 3, 6, 10]
    assert alarm_days(stats_, 1.0, cooldown=4) == [1, 6]
    assert alarm_days(stats_, 1.0, cooldown=3) == [1, 6, 10]
    # Weekdays: Friday -> Monday is one trading day.
    assert in_cooldown("2013-01-04", "2013-01-07", 2)
    assert not in_cooldown("2013-01-04", "2013-01-08", 2)
    assert not in_cooldown(None, "2013-01-08", 20)


def test_data_quality_finds_the_real_unadjusted_msft_split_and_nothing_in_adjusted_prices() -> None:
    raw = pd.read_csv(sample_path())
    msft = raw[raw["Ticker"] == "MSFT"].sort_values("Date")
    issues = data_quality(msft["Date"].tolist(), msft["Close"].to_numpy())
    splits = [q for q in issues if q.kind == "split"]
    assert [q.date for q in splits] == ["2003-02-18"]
    assert "unadjusted split" in splits[0].detail
    adjusted = fetch_prices("MSFT", source="sample")
    kinds = {
        q.kind for q in data_quality(adjusted["Date"].astype(str).tolist(), adjusted["Close"].to_numpy())
    }
    assert "split" not in kinds


def test_data_quality_gaps_and_stale_prices() -> None:
    dates = ["2013-01-02", "2013-01-03", "2013-01-04", "2013-01-14", "2013-01-15", "2013-01-16"]
    issues = data_quality(dates, [10.0, 10.1, 10.2, 10.0, 10.0, 10.0], as_of="2013-01-31")
    kinds = sorted(q.kind for q in issues)
    assert kinds == ["gap", "stale", "stale"]
    assert split_like(0.503) == 0.5 and split_like(0.9) is None and split_like(3.05) == 3.0
    with pytest.raises(DetectorError, match="one date per close"):
        data_quality(dates[:2], [1.0])


def test_calibrate_picks_the_smallest_threshold_meeting_the_target() -> None:
    # Two runs of one trading year each; alarms fall as the threshold rises.
    runs = [np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 3.0])]
    counts = {1.0: 6, 2.0: 4, 3.0: 2, 4.0: 0}
    result = calibrate(runs, lambda run, h: counts[h] // 2, lambda run: 252, counts, target_per_year=1.0)
    assert result == Calibration(threshold=3.0, false_alarms_per_year=1.0, alarms=2, days=504, runs=2)
    with pytest.raises(ValueError, match="no candidate"):
        calibrate(runs, lambda run, h: 9, lambda run: 252, [1.0], target_per_year=1.0)
    assert false_alarms_per_year(3, 504) == 1.5


def test_drift_calibration_on_shuffled_returns_meets_its_target() -> None:
    closes = fetch_prices("IBM", source="sample")["Close"].to_numpy()
    returns = np.diff(np.log(closes))
    result = calibrate_drift({"IBM": returns}, shuffle_count=2, seed=0)
    assert result.false_alarms_per_year <= 1.0 and result.runs == 2
    # A lower threshold than the calibrated one breaks the target on the same shuffles.
    lower = sum(
        len(alarm_days(rolling_drift_statistics(s), result.threshold * 0.8, 20))
        for s in shuffles(returns, 2, 0)
    )
    assert false_alarms_per_year(lower, result.days) > 1.0


def test_the_settings_defaults_are_the_calibrated_thresholds() -> None:
    from retrain.monitoring.calibration import thresholds_from_settings
    from retrain.settings import SettingsError

    assert thresholds_from_settings({}) == DEFAULT_THRESHOLDS
    custom = thresholds_from_settings(
        {"RETRAIN_MONITOR_DRIFT_THRESHOLD": "0.5", "RETRAIN_MONITOR_COOLDOWN_DAYS": "5"}
    )
    assert (custom.drift, custom.cooldown_days) == (0.5, 5)
    with pytest.raises(SettingsError, match="drift threshold must be in"):
        thresholds_from_settings({"RETRAIN_MONITOR_DRIFT_THRESHOLD": "2"})


def test_triggers_prefer_performance_and_the_cooldown_silences_both() -> None:
    from retrain.monitoring.detectors import DriftResult
    from retrain.monitoring.monitor import decide_trigger, rolling_metrics

    th = DEFAULT_THRESHOLDS
    drift = DriftResult(0.5, 0.2, 0.5, 250, 20)
    cusum = {"alarm": True, "value": 12.0, "days": 30, "model_version": "3"}
    assert decide_trigger(drift, None, th, cooling_down=False)["trigger"] == "drift"
    both = decide_trigger(drift, cusum, th, cooling_down=False)
    assert both["trigger"] == "performance" and "12.000 > threshold" in both["reason"]
    assert decide_trigger(drift, cusum, th, cooling_down=True) is None
    assert decide_trigger(DriftResult(0.3, 0.3, 0.1, 250, 20), None, th, cooling_down=False) is None
    rows = [
        {"forecast": 11.0, "last_close": 10.0, "actual": 12.0},
        {"forecast": 11.0, "last_close": 10.0, "actual": 9.0},
        {"forecast": 11.0, "last_close": 10.0, "actual": None},
    ]
    m = rolling_metrics(rows, windows=(1, 20))
    assert m["1"] == {"n": 1, "mae": 2.0, "naive_mae": 1.0, "mae_ratio": 2.0, "directional_accuracy": 0.0}
    assert m["20"]["n"] == 2 and m["20"]["mae_ratio"] == pytest.approx(3.0 / 3.0)
    assert m["20"]["directional_accuracy"] == 0.5
