"""The monitor's request parsing and output shape (pure parts of `retrain.monitoring.orchestration`)."""

from __future__ import annotations

import pytest

from retrain.monitoring.orchestration import (
    MonitorRequestError,
    parse_monitor_request,
    summarise,
    trading_days,
)

ENV = {"RETRAIN_TICKERS": "MSFT", "RETRAIN_SOURCE": "sample", "RETRAIN_MONITOR_COOLDOWN_DAYS": "7"}


def test_a_range_becomes_its_weekdays_with_the_thresholds_of_the_settings() -> None:
    spec = parse_monitor_request({"from": "2012-07-06", "to": "2012-07-10"}, ENV)
    assert spec["ticker"] == "MSFT" and spec["source"] == "sample"
    assert spec["days"] == ["2012-07-06", "2012-07-09", "2012-07-10"]  # the weekend is skipped
    assert spec["thresholds"]["cooldown_days"] == 7 and spec["thresholds"]["drift"] == 0.487
    assert parse_monitor_request({"ticker": "aapl", "from": "2012-07-06"}, ENV)["days"] == ["2012-07-06"]
    assert trading_days("2012-07-07", "2012-07-08") == []


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([], "send a JSON object"),
        ({"ticker": "MS FT", "from": "2012-07-06"}, "invalid ticker"),
        ({"from": "2012-07-07", "to": "2012-07-08"}, "no weekday"),
        ({"from": "2012-07-06", "source": "ftp:x"}, "yfinance, sample, csv:PATH or blob:CONTAINER/PATH"),
    ],
)
def test_bad_requests_say_what_to_send(body: object, says: str) -> None:
    with pytest.raises(MonitorRequestError, match=says):
        parse_monitor_request(body, ENV)


def test_summary_counts_and_collects_alerts() -> None:
    results = [
        {"date": "2012-07-02", "forecast": {"forecast": 1.0}, "scored": 0, "alerts": [], "metrics": {}},
        {
            "date": "2012-07-03",
            "forecast": None,
            "scored": 1,
            "alerts": [{"kind": "drift", "statistic": 0.4, "threshold": 0.372}],
            "metrics": {"20": {"mae_ratio": 0.98}},
            "warnings": ["metrics not logged to MLflow: PlatformError: 403"],
        },
    ]
    out = summarise("MSFT", results, [{"instance_id": "i", "trigger": "drift", "reason": "r"}])
    assert out == {
        "ticker": "MSFT",
        "days": 2,
        "forecasts": 1,
        "scored": 1,
        "mae_ratio": 0.98,
        "alerts": [{"date": "2012-07-03", "kind": "drift", "statistic": 0.4, "threshold": 0.372}],
        "retrains": [{"instance_id": "i", "trigger": "drift", "reason": "r"}],
        "warnings": [{"date": "2012-07-03", "warning": "metrics not logged to MLflow: PlatformError: 403"}],
    }


@pytest.mark.parametrize("loose", ["20120103", "2012-W01-2", "2012-01-03T00:00", "2012-1-3"])
def test_dates_must_be_yyyy_mm_dd(loose: str) -> None:
    with pytest.raises(MonitorRequestError, match="must be YYYY-MM-DD"):
        parse_monitor_request({"from": loose, "to": "2012-01-05"}, ENV)


def test_errors_do_not_echo_a_huge_value() -> None:
    for body in ({"from": "x" * 1_000_000}, {"y" * 1_000_000: 1}, {"ticker": "z" * 1_000_000}):
        with pytest.raises(MonitorRequestError) as caught:
            parse_monitor_request(body, ENV)
        assert len(str(caught.value)) < 300, str(caught.value)[:300]
