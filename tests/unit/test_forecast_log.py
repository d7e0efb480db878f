"""The monitor's forecast log, both adapters (SQLite; Azure Table through the real azure-data-tables
client and the recording transport): forecasts, joins with the closes that became known, triggers."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrain.monitoring.forecast_log import ForecastLog, SqliteForecastLog, TableForecastLog
from retrain.state_files import StateError as StateError
from tests.unit.azure_recording_transport import StaticTokenCredential
from tests.unit.table_recording_transport import TableTransport


@pytest.fixture(params=["sqlite", "table"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ForecastLog:
    if request.param == "sqlite":
        log: ForecastLog = SqliteForecastLog(tmp_path / "monitor.sqlite")
    else:
        log = TableForecastLog.from_account(
            "stretrainfunc", StaticTokenCredential(), transport=TableTransport()
        )
    assert isinstance(log, ForecastLog)  # both adapters keep the port
    return log


def test_forecasts_are_joined_with_the_next_known_close(store) -> None:
    for date, last, forecast in (
        ("2012-07-02", 30.0, 30.1),
        ("2012-07-03", 30.5, 30.4),
        ("2012-07-05", 31.0, 31.2),
    ):
        store.record_forecast(
            "MSFT",
            {
                "date": date,
                "target_date": None,
                "last_close": last,
                "forecast": forecast,
                "model_name": "m",
                "model_version": "1",
                "slot": "blue",
            },
        )
    # Data as of 2012-07-05: the closes of 07-03 and 07-05 are known (07-04 was a holiday).
    filled = store.join_actuals("MSFT", ["2012-07-02", "2012-07-03", "2012-07-05"], [30.0, 30.5, 31.0])
    assert filled == 2
    rows = store.forecasts("MSFT")
    assert [(r["date"], r["actual"], r["actual_date"]) for r in rows] == [
        ("2012-07-02", 30.5, "2012-07-03"),
        ("2012-07-03", 31.0, "2012-07-05"),
        ("2012-07-05", None, None),
    ]
    assert rows[0]["slot"] == "blue" and rows[0]["model_version"] == "1"
    assert [r["date"] for r in store.forecasts("MSFT", until="2012-07-03")] == ["2012-07-02", "2012-07-03"]
    assert store.join_actuals("MSFT", ["2012-07-05"], [31.0]) == 0  # nothing new is known
    assert store.forecasts("AAPL") == []


def test_days_and_triggers(store) -> None:
    store.record_day("MSFT", "2012-07-02", {"date": "2012-07-02", "alerts": []})
    store.record_day("MSFT", "2012-07-02", {"date": "2012-07-02", "alerts": ["replayed"]})  # replaces
    assert store.days("MSFT") == [{"date": "2012-07-02", "alerts": ["replayed"]}]
    assert store.last_trigger_date("MSFT", "2012-12-31") is None
    store.record_trigger("MSFT", "2012-08-07", "drift", "KS distance 0.418 > threshold 0.372")
    store.record_retrain("MSFT", "2012-08-07", "retrain-msft-20261127t170000z", "deployed")
    [trigger] = store.triggers("MSFT")
    assert (trigger["trigger"], trigger["instance_id"], trigger["status"]) == (
        "drift",
        "retrain-msft-20261127t170000z",
        "deployed",
    )
    assert trigger["reason"].startswith("KS distance")
    assert store.last_trigger_date("MSFT", "2012-08-08") == "2012-08-07"
    assert store.last_trigger_date("MSFT", "2012-08-07") is None  # strictly before


def test_an_emptied_forecast_log_is_refused_not_recreated(tmp_path: Path) -> None:
    path = tmp_path / "monitoring" / "monitor.sqlite"
    SqliteForecastLog(path).record_day("MSFT", "2026-01-05", {"mae": 1.0})
    path.write_bytes(b"")
    with pytest.raises(StateError) as refused:
        SqliteForecastLog(path)
    message = str(refused.value)
    assert f"{path} is empty" in message and "the monitor's forecast log" in message
    assert "restore the file from a backup, or delete" in message and path.stat().st_size == 0
