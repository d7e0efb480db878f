"""The monitoring commands as real processes: `retrain monitor` (through an in-process local host),
`retrain report` (PNG + MLflow time series) and `retrain served`, and their errors for bad input."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def retrain(args: list[str], state: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RETRAIN_", "MLFLOW_"))}
    base.update({"RETRAIN_SOURCE": "sample", "PYTHONPATH": str(REPO), **env})
    return subprocess.run(
        [sys.executable, "-m", "retrain", *args, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        env=base,
        cwd=state,
        timeout=300,
    )


def test_monitor_steps_through_the_days_and_ends_with_one_json_line(tmp_path: Path) -> None:
    # The in-memory platform has no endpoint in this fresh process: every day logs a no_forecast alert.
    done = retrain(
        ["monitor", "--ticker", "MSFT", "--from", "2012-07-02", "--to", "2012-07-04"],
        tmp_path,
        RETRAIN_PLATFORM="tests.integration.memory_platform:shared",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["ticker"] == "MSFT" and summary["days"] == 3 and summary["runtime_status"] == "Completed"
    assert {"forecasts", "scored", "mae_ratio", "alerts", "retrains", "instance_id"} <= set(summary)
    assert summary["forecasts"] == 0 and summary["retrains"] == []
    assert [a["kind"] for a in summary["alerts"]] == ["no_forecast"] * 3
    assert "day 2012-07-02 (1/3)" in done.stderr
    assert (
        "day 2012-07-04 (data to 2012-07-03) (3/3)" in done.stderr
    )  # a holiday: the data ends the day before
    assert "alerts ['no_forecast']" in done.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["monitor", "--ticker", "MSFT", "--from", "2012-07-10", "--to", "2012-07-02"], "is before from"),
        (["monitor", "--ticker", "MSFT", "--from", "soon"], "YYYY-MM-DD"),
        (["served", "--ticker", "MSFT", "--at", "noonish"], "ISO 8601"),
        (["report", "--ticker", "MSFT", "--out", "r.png"], "run `retrain monitor --ticker MSFT` first"),
        (["report", "--ticker", "MSFT", "--out", "r.jpg"], "ending in .png"),
    ],
)
def test_bad_input_exits_2_with_what_to_send(tmp_path: Path, args: list[str], says: str) -> None:
    done = retrain(args, tmp_path)
    assert done.returncode == 2 and says in done.stderr, done.stderr[-2000:]


def test_report_draws_the_png_and_logs_time_series_to_mlflow(tmp_path: Path) -> None:
    from retrain.monitoring.forecast_log import SqliteForecastLog

    log = SqliteForecastLog(tmp_path / "monitoring" / "monitor.sqlite")
    days = ["2012-07-02", "2012-07-03", "2012-07-05", "2012-07-06"]
    for i, day in enumerate(days):
        log.record_day(
            "MSFT",
            day,
            {
                "date": day,
                "forecast": {
                    "last_close": 30.0 + i,
                    "forecast": 30.5 + i,
                    "model_version": "1" if i < 2 else "2",
                },
                "metrics": {"20": {"mae_ratio": 1.0 + i / 10}},
                "cusum": {"value": float(i)},
                "drift": {"statistic": 0.1 * i},
            },
        )
    log.record_trigger("MSFT", "2012-07-03", "drift", "KS distance 0.4 > threshold 0.372")
    done = retrain(["report", "--ticker", "MSFT", "--out", str(tmp_path / "r.png")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["days"], summary["triggers"]) == (4, 1)
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    history = client.get_metric_history(summary["mlflow_run_id"], "mae_ratio_20")
    # step = the day's ordinal (the monitor logs the same way each day; the report fills in what it did not)
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [
        dt.date.fromisoformat(d).toordinal() for d in days
    ]
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx([1.0, 1.1, 1.2, 1.3])
    assert client.get_experiment_by_name("monitor-msft") is not None
    again = retrain(["report", "--ticker", "MSFT", "--out", str(tmp_path / "r.png")], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["mlflow_run_id"] == summary["mlflow_run_id"]
    assert len(client.get_metric_history(summary["mlflow_run_id"], "mae_ratio_20")) == 4  # no duplicates
