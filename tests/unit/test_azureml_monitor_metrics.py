"""The monitor's daily metrics through the workspace's MLflow REST API (no mlflow package): the azureml
adapter's calls, through the real azure-ai-ml SDK and azure-core pipeline with the recording transport
(tests/unit/azure_recording_transport.py answers as an MLflow tracking server)."""

from __future__ import annotations

import datetime as dt

import pytest

from retrain.ports import PlatformError
from tests.unit.azure_recording_transport import MLFLOW_HOST, WS_PATH

API = "/api/2.0/mlflow/"


def _mlflow_calls(arm):
    return [(c.method, c.path.rsplit(API, 1)[-1]) for c in arm.calls if c.host == MLFLOW_HOST]


def _midnight_ms(day: str) -> int:
    return int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp() * 1000)


def test_first_day_creates_the_experiment_and_the_run_then_logs_one_batch(platform, arm):
    platform.log_monitor_metrics(
        "BRK-B", "2012-07-02", {"mae_20": 0.5, "mae_ratio_20": 0.98, "cusum": float("nan")}
    )
    assert _mlflow_calls(arm) == [
        ("GET", "experiments/get-by-name"),
        ("POST", "experiments/create"),
        ("POST", "runs/search"),
        ("POST", "runs/create"),
        ("POST", "runs/log-batch"),
    ]
    calls = [c for c in arm.calls if c.host == MLFLOW_HOST]
    assert all(c.path.startswith(("/mlflow/v1.0" + WS_PATH, "/mlflow/v2.0" + WS_PATH)) for c in calls)
    assert all(c.headers["Authorization"] == "Bearer offline-test-token" for c in calls)
    get, create, search, run, batch = calls
    assert get.query == {"experiment_name": ["monitor-brk-b"]}
    assert create.body == {"name": "monitor-brk-b"}
    assert search.body["experiment_ids"] == ["1"]
    assert search.body["filter"] == "tags.retrain_monitor_ticker = 'BRK-B'"
    assert run.body["run_name"] == "monitor" and run.body["experiment_id"] == "1"
    assert {"key": "retrain_monitor_ticker", "value": "BRK-B"} in run.body["tags"]
    step = dt.date(2012, 7, 2).toordinal()
    stamp = _midnight_ms("2012-07-02")
    assert batch.body == {  # the NaN is left out: MLflow's UI cannot plot it
        "run_id": "run-1",
        "metrics": [
            {"key": "mae_20", "value": 0.5, "timestamp": stamp, "step": step},
            {"key": "mae_ratio_20", "value": 0.98, "timestamp": stamp, "step": step},
        ],
    }


def test_later_days_reuse_the_run_and_a_replayed_day_is_not_logged_twice(platform, arm):
    for day, mae in (("2012-07-02", 0.5), ("2012-07-03", 0.6), ("2012-07-05", 0.7)):
        platform.log_monitor_metrics("MSFT", day, {"mae_20": mae})
    arm.calls.clear()
    platform.log_monitor_metrics("MSFT", "2012-07-05", {"mae_20": 0.7})  # the last day again (a re-run)
    assert _mlflow_calls(arm) == [("GET", "experiments/get-by-name"), ("POST", "runs/search")]
    arm.calls.clear()
    platform.log_monitor_metrics("MSFT", "2012-07-03", {"mae_20": 0.6, "naive_mae_20": 0.61})  # an older day
    assert _mlflow_calls(arm) == [
        ("GET", "experiments/get-by-name"),
        ("POST", "runs/search"),
        ("GET", "metrics/get-history"),  # mae_20 has later days: is 07-03 among them? (naive_mae_20 is new)
        ("POST", "runs/log-batch"),
    ]
    [batch] = arm.find("POST", r"runs/log-batch$")
    assert [m["key"] for m in batch.body["metrics"]] == ["naive_mae_20"]  # mae_20 of that day was there
    history = arm.store["mlflow-history"][("run-1", "mae_20")]
    assert [(m["step"], m["value"]) for m in history] == [
        (dt.date(2012, 7, d).toordinal(), v) for d, v in ((2, 0.5), (3, 0.6), (5, 0.7))
    ]
    assert len(arm.store["mlflow-runs"]) == 1 and arm.store["mlflow-experiments"] == {"monitor-msft": "1"}


def test_bad_day_or_metric_is_a_clear_error_before_any_call(platform, arm):
    with pytest.raises(PlatformError, match="YYYY-MM-DD"):
        platform.log_monitor_metrics("MSFT", "02/07/2012", {"mae_20": 0.5})
    with pytest.raises(PlatformError, match="not a number"):
        platform.log_monitor_metrics("MSFT", "2012-07-02", {"mae_20": "0.5"})
    with pytest.raises(PlatformError, match="upper-case symbol"):
        platform.log_monitor_metrics("msft' or 1=1", "2012-07-02", {"mae_20": 0.5})
    assert _mlflow_calls(arm) == []


def test_an_mlflow_error_is_a_platform_error(platform, arm):
    platform._mlflow_tracking_base()  # the workspace read (ARM) succeeds ...
    arm.fail_next = [(403, {})]  # ... the MLflow API refuses
    with pytest.raises(PlatformError, match="experiments/get-by-name"):
        platform.log_monitor_metrics("MSFT", "2012-07-02", {"mae_20": 0.5})
    assert _mlflow_calls(arm) == [("GET", "experiments/get-by-name")]
