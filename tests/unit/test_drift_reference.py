"""The drift check that cannot go blind: its reference is the data the served model was fitted on, found by
its data end (never "today minus N days"), re-armed after the gate rejects a drift challenger; a check
that cannot run is an alert. The monitor's day runs for real on the bundled sample, the forecast log in a
temporary state dir and the in-memory platform adapter (tests/integration/memory_platform.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrain import adapters, naming
from retrain.adapters import get_forecast_log
from retrain.market_data import fetch_prices
from retrain.monitoring.detectors import DRIFT_WINDOW_DAYS, REFERENCE_DAYS, drift_check
from retrain.monitoring.monitor import (
    drift_reference_end,
    drift_since_reference,
    monitor_day,
    served_fit_end,
)
from retrain.ports import ModelRef
from retrain.vocabulary import TAG_DATA_VERSION, TAG_FITTED_DATA_END
from tests.integration.memory_platform import MemoryPlatform

THRESHOLDS = {"drift": 0.374, "cusum": 10.391, "cooldown_days": 20}


def memory_platform() -> MemoryPlatform:
    """RETRAIN_PLATFORM=tests.unit.test_drift_reference:memory_platform"""
    return MemoryPlatform()


# -- the reference end rule (pure) ----------------------------------------------------------------


def test_the_served_models_fit_end_is_its_tag_else_its_data_versions_date() -> None:
    assert (
        served_fit_end({TAG_FITTED_DATA_END: "2010-05-28", TAG_DATA_VERSION: "20100630-abc"}) == "2010-05-28"
    )
    assert served_fit_end({TAG_DATA_VERSION: "20100630-0123456789ab"}) == "2010-06-30"  # before the tag
    assert served_fit_end({TAG_FITTED_DATA_END: "soon", TAG_DATA_VERSION: "20100630-abc"}) == "2010-06-30"
    assert served_fit_end({}) is None


def test_the_reference_ends_at_the_fit_or_at_the_last_rejected_drift_challengers_data() -> None:
    assert drift_reference_end("2010-06-30", "2010-06-30", []) == "2010-06-30"
    # Rejected drift challengers while the model served: the latest one's data end.
    assert drift_reference_end("2010-06-30", "2010-06-30", ["2010-08-02", "2010-09-01"]) == "2010-09-01"
    # A rejection on data up to the served model's own data end happened before it served.
    assert drift_reference_end("2010-06-30", "2010-06-30", ["2010-05-03", "2010-06-30"]) == "2010-06-30"
    # A model fitted on less than its data (fit end before data end): rejections before the data end
    # still predate it.
    assert drift_reference_end("2010-03-31", "2010-06-30", ["2010-05-03"]) == "2010-03-31"
    assert drift_reference_end(None, None, ["2010-05-03"]) is None


# -- the check (pure) -------------------------------------------------------------------------------


def _series(days: int, seed: int = 1) -> tuple[list[str], np.ndarray]:
    dates = [str(d) for d in np.busday_offset("2005-01-03", np.arange(days), roll="forward")]
    returns = np.random.default_rng(seed).normal(0.0, 0.01, days)
    return dates, 100.0 * np.exp(np.cumsum(returns))


def test_a_reference_three_years_before_the_day_is_still_checked() -> None:
    dates, closes = _series(1200)
    end = dates[300]  # ~3.5 years of trading days before the last day
    outcome = drift_since_reference(dates, closes, end)
    returns = np.diff(np.log(closes))
    assert outcome.not_checked is None
    assert outcome.result == drift_check(returns[300 - REFERENCE_DAYS : 300], returns[-DRIFT_WINDOW_DAYS:])


def test_the_check_is_not_due_until_a_full_window_has_passed_since_the_reference() -> None:
    dates, closes = _series(400)
    due = drift_since_reference(dates, closes, dates[-1 - DRIFT_WINDOW_DAYS])
    waiting = drift_since_reference(dates, closes, dates[-DRIFT_WINDOW_DAYS])
    assert due.result is not None and due.result.n_new == DRIFT_WINDOW_DAYS
    assert waiting.result is None and waiting.not_checked is None


@pytest.mark.parametrize(
    ("end_at", "message"),
    [
        (60, f"60 daily returns up to the reference end 2005-03-28 in the data (it starts 2005-01-03); "
             f"the check needs at least {REFERENCE_DAYS // 2} of {REFERENCE_DAYS}"),
        ("2004-12-31", "0 daily returns up to the reference end 2004-12-31"),
        ("2007-01-01", "the reference ends 2007-01-01, after the monitored day 2006-07-14"),
        (None, "no fitted-data end"),
    ],
)  # fmt: skip
def test_a_check_that_cannot_run_says_why(end_at: int | str | None, message: str) -> None:
    dates, closes = _series(400)
    end = dates[end_at] if isinstance(end_at, int) else end_at
    outcome = drift_since_reference(dates, closes, end)
    assert outcome.result is None
    assert outcome.not_checked is not None and message in outcome.not_checked


# -- the monitor's day ------------------------------------------------------------------------------


@pytest.fixture()
def champion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A function registering the MSFT champion with tags; the platform and forecast log are fresh."""
    monkeypatch.setenv("RETRAIN_PLATFORM", f"{__name__}:memory_platform")
    monkeypatch.setenv("RETRAIN_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("RETRAIN_SOURCE", "sample")
    adapters.reset()
    platform = adapters.get_platform()
    assert isinstance(platform, MemoryPlatform)

    def register(tags: dict[str, str]) -> None:
        name = naming.model_name("MSFT")
        platform.models[name] = [ModelRef(name=name, version="1", tags=tags)]
        platform.champions[name] = "1"

    yield register
    adapters.reset()


def _day(as_of: str) -> dict:
    return monitor_day({"ticker": "MSFT", "as_of": as_of, "source": "sample", "thresholds": THRESHOLDS})


def _not_checked(summary: dict) -> list[dict]:
    return [a for a in summary["alerts"] if a["kind"] == "drift_not_checked"]


def test_a_champion_fitted_three_years_before_the_day_still_gets_a_drift_statistic(champion) -> None:
    champion({TAG_DATA_VERSION: "20080102-0123456789ab"})
    summary = _day("2011-03-01")
    assert summary["drift_reference_end"] == "2008-01-02"
    assert _not_checked(summary) == []
    # The statistic is the one of the returns up to the champion's data end against the last 20 days.
    prices = fetch_prices("MSFT", "sample", None, end="2011-03-01")
    dates = [d.strftime("%Y-%m-%d") for d in prices["Date"]]
    expected = drift_since_reference(dates, prices["Close"].to_numpy(), "2008-01-02").result
    assert expected is not None and summary["drift"] == expected.to_dict()
    assert summary["drift"]["n_reference"] == REFERENCE_DAYS


def test_the_fitted_data_end_tag_is_the_reference(champion) -> None:
    champion({TAG_DATA_VERSION: "20100630-0123456789ab", TAG_FITTED_DATA_END: "2009-12-31"})
    assert _day("2011-03-01")["drift_reference_end"] == "2009-12-31"


def test_a_drift_check_that_cannot_run_is_an_alert_not_silence(champion) -> None:
    # The sample starts 2000-03-01: 40 trading days up to this champion's data end are too few.
    champion({TAG_DATA_VERSION: "20000428-0123456789ab"})
    summary = _day("2001-03-01")
    assert summary["drift"] is None
    [alert] = _not_checked(summary)
    assert alert["date"] == summary["date"] == "2001-03-01"
    assert alert["detail"].startswith("drift not checked: ")
    assert f"the check needs at least {REFERENCE_DAYS // 2}" in alert["detail"]
    # The day's summary in the log carries it, as every alert.
    assert _not_checked(get_forecast_log().days("MSFT")[-1]) == [alert]


def test_a_champion_without_a_data_end_is_an_alert(champion) -> None:
    champion({})
    [alert] = _not_checked(_day("2011-03-01"))
    assert "no fitted-data end" in alert["detail"]


def test_no_champion_no_drift_alert(champion) -> None:
    summary = _day("2011-03-01")
    assert summary["champion_version"] is None and _not_checked(summary) == []


def test_after_a_rejected_drift_challenger_the_reference_moves_to_its_data(champion) -> None:
    champion({TAG_DATA_VERSION: "20080102-0123456789ab"})
    store = get_forecast_log()
    # What the monitor orchestration records after the cycles it started (monitor_record_retrain).
    for date, trigger, status in [
        ("2010-06-01", "drift", "rejected"),
        ("2010-09-01", "performance", "rejected"),  # not a drift challenger
        ("2010-10-01", "drift", "failed: training job ended Failed"),  # never judged by the gate
        ("2011-04-01", "drift", "rejected"),  # after the day: not known yet on an as-of replay
    ]:
        store.record_trigger("MSFT", date, trigger, "reason")
        store.record_retrain("MSFT", date, f"adhoc-{date}", status)
    summary = _day("2011-03-01")
    assert summary["drift_reference_end"] == "2010-06-01"
    prices = fetch_prices("MSFT", "sample", None, end="2011-03-01")
    dates = [d.strftime("%Y-%m-%d") for d in prices["Date"]]
    expected = drift_since_reference(dates, prices["Close"].to_numpy(), "2010-06-01").result
    assert expected is not None and summary["drift"] == expected.to_dict()
