"""The local platform's monitoring time series: the state dir's real MLflow SQLite store, read back
through the MLflow client the UI uses."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from retrain.local.platform import LocalPlatform
from retrain.ports import PlatformError


def _runs(platform: LocalPlatform, ticker: str) -> list:
    experiment = platform.client.get_experiment_by_name(f"monitor-{ticker.lower()}")
    assert experiment is not None
    return platform.client.search_runs([experiment.experiment_id])


def test_two_days_are_two_points_and_a_relogged_day_adds_none(tmp_path: Path) -> None:
    platform = LocalPlatform(tmp_path / "state")
    platform.log_monitor_metrics("MSFT", "2012-07-02", {"mae_ratio_20": 0.98, "cusum": float("nan")})
    platform.log_monitor_metrics("MSFT", "2012-07-03", {"mae_ratio_20": 1.02, "cusum": 0.5})
    platform.log_monitor_metrics("MSFT", "2012-07-03", {"mae_ratio_20": 1.02, "cusum": 0.5})  # a replay
    # A replay that computed a slightly different value still leaves one point for the day (MLflow's store
    # would keep both: it only drops a metric identical in key, step, timestamp and value).
    platform.log_monitor_metrics("MSFT", "2012-07-03", {"mae_ratio_20": 1.05})
    platform.log_monitor_metrics("MSFT", "2012-07-02", {"mae_ratio_20": 0.98})  # an older day again
    [run] = _runs(platform, "MSFT")
    assert run.info.run_name == "monitor" and run.data.tags["retrain_monitor_ticker"] == "MSFT"
    history = platform.client.get_metric_history(run.info.run_id, "mae_ratio_20")
    points = sorted((m.step, m.timestamp, m.value) for m in history)
    midnight = [int(dt.datetime(2012, 7, d, tzinfo=dt.UTC).timestamp() * 1000) for d in (2, 3)]
    assert points == [
        (dt.date(2012, 7, 2).toordinal(), midnight[0], 0.98),
        (dt.date(2012, 7, 3).toordinal(), midnight[1], 1.02),
    ]
    # The NaN of the first day is left out; the second day's CUSUM is the only point.
    assert [m.value for m in platform.client.get_metric_history(run.info.run_id, "cusum")] == [0.5]


def test_a_second_platform_on_the_same_state_dir_appends_to_the_same_run(tmp_path: Path) -> None:
    LocalPlatform(tmp_path / "state").log_monitor_metrics("IBM", "2012-07-02", {"mae_20": 1.0})
    again = LocalPlatform(tmp_path / "state")
    run_id = again.log_monitor_days("IBM", {"2012-07-02": {"mae_20": 1.0}, "2012-07-03": {"mae_20": 2.0}})
    [run] = _runs(again, "IBM")
    assert run.info.run_id == run_id
    assert [m.value for m in again.client.get_metric_history(run_id, "mae_20")] == [1.0, 2.0]


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    platform = LocalPlatform(tmp_path / "state")
    with pytest.raises(PlatformError, match="YYYY-MM-DD"):
        platform.log_monitor_metrics("MSFT", "yesterday", {"mae_20": 1.0})
    with pytest.raises(PlatformError, match="metric name"):
        platform.log_monitor_metrics("MSFT", "2012-07-02", {"mae|20": 1.0})
