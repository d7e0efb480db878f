"""Azure ML model monitoring's breach: the ticker comes from the breached signal's name in the tag Azure ML
sets on the threshold-evaluation step run (no `ticker` tag there: users cannot tag that run), by the naming
convention `<naming.azure_slug(ticker)>_<signal>` or the RETRAIN_MONITOR_SIGNAL_TICKERS mapping."""

from __future__ import annotations

import pytest

from retrain import naming, settings
from retrain.events import breached_signal, model_monitor_breach, parse_events, signal_ticker
from retrain.triggers import _monitor_breach, monitor_signal_tickers
from tests.helpers import grid_event

BREACH_TAG = "azureml_modelmonitor_threshold_breached"


def azure_breach_message(signal: str) -> str:
    """The tag value exactly as Azure/azureml-assets' evaluate_metrics_threshold.py writes it."""
    rows = [
        '{"group":"close","metric_value":0.31,"metric_name":"jensen_shannon_distance","threshold_value":0.1}'
    ]
    return (
        f"The signal '{signal}' has failed due to one or more features violating metric thresholds.\n"
        "The feature names and their corresponding computed metric values violating "
        f"the threshold are \n{rows}\n"
    )


def monitor_run(signal: str, status: str = "Failed") -> object:
    [job] = parse_events([grid_event("evaluate-step-1", status, {BREACH_TAG: azure_breach_message(signal)})])
    return job


def test_the_signal_name_is_read_from_azure_mls_message() -> None:
    assert breached_signal(azure_breach_message("msft_data-drift")) == "msft_data-drift"
    assert breached_signal("has failed due to one or more features violating metric thresholds") is None


def test_a_breach_without_a_ticker_tag_names_its_ticker_by_the_signal_name() -> None:
    job = monitor_run("msft_data-drift")
    assert "ticker" not in job.tags and job.ticker is None
    breach = model_monitor_breach(job, ["AAPL", "MSFT"])
    assert breach is not None and breach.ticker == "MSFT" and breach.signal == "msft_data-drift"
    assert breach.problem is None
    assert breach.reason == (
        "Azure ML model monitoring run evaluate-step-1 (Failed): The signal 'msft_data-drift' has failed "
        "due to one or more features violating metric thresholds."
    )


@pytest.mark.parametrize("ticker", ["BRK.B", "BRK-B", "^GSPC", "EURUSD=X", "1ABC"])
def test_the_convention_is_one_to_one_over_tickers_that_need_a_hash(ticker: str) -> None:
    tickers = ["BRK.B", "BRK-B", "BRK^B", "^GSPC", "EURUSD=X", "1ABC", "MSFT"]
    signal = f"{naming.azure_slug(ticker)}_prediction-drift"
    assert signal_ticker(signal, tickers) == ticker
    assert signal_ticker(signal.upper(), tickers) == ticker  # Azure keeps the case the user typed
    assert signal_ticker(naming.azure_slug(ticker), tickers) == ticker  # the slug alone names it too


def test_only_configured_tickers_are_named_and_the_mapping_comes_first() -> None:
    # Azure's default signal names name no ticker (and "data_drift" must not retrain a ticker DATA).
    assert signal_ticker("data-drift-signal", ["MSFT"]) is None
    assert signal_ticker("data_drift", ["MSFT"]) is None
    assert signal_ticker("data-drift-signal", ["MSFT"], {"data-drift-signal": "AAPL"}) == "AAPL"
    assert signal_ticker("msft_x", ["MSFT"], {"msft_x": "AAPL"}) == "AAPL"


def test_a_breach_that_names_no_ticker_says_how_to_name_the_signal() -> None:
    breach = model_monitor_breach(monitor_run("data-drift-signal"), ["MSFT"])
    assert breach is not None and breach.ticker is None
    assert "msft_data-drift" in breach.problem and "RETRAIN_MONITOR_SIGNAL_TICKERS" in breach.problem


def test_other_runs_are_no_breach() -> None:
    ours = parse_events(
        [grid_event("j", "Completed", {"orchestration_instance_id": "retrain-msft-x", BREACH_TAG: "x"})]
    )[0]
    quiet = parse_events([grid_event("m", "Completed", {"ticker": "MSFT"})])[0]
    assert model_monitor_breach(ours, ["MSFT"]) is None and model_monitor_breach(quiet, ["MSFT"]) is None


def test_the_trigger_reads_the_tickers_and_the_mapping_from_the_settings(monkeypatch) -> None:
    monkeypatch.setenv("RETRAIN_TICKERS", "AAPL,BRK.B")
    monkeypatch.setenv("RETRAIN_MONITOR_SIGNAL_TICKERS", '{"data-drift-signal": "MSFT"}')
    assert _monitor_breach(monitor_run(f"{naming.azure_slug('BRK.B')}_data-drift")).ticker == "BRK.B"
    assert _monitor_breach(monitor_run("data-drift-signal")).ticker == "MSFT"
    assert _monitor_breach(monitor_run("msft_data-drift")).ticker is None  # MSFT is not configured
    assert _monitor_breach(parse_events([grid_event("m", "Completed", {})])[0]) is None


@pytest.mark.parametrize("raw", ["MSFT", '["MSFT"]', '{"data-drift-signal": 1}'])
def test_a_bad_mapping_is_refused_with_what_to_set(monkeypatch, raw: str) -> None:
    monkeypatch.setenv("RETRAIN_TICKERS", "MSFT")
    monkeypatch.setenv("RETRAIN_MONITOR_SIGNAL_TICKERS", raw)
    with pytest.raises(settings.SettingsError, match=r'set a JSON object .* e\.g\. \{"data-drift-signal"'):
        monitor_signal_tickers()
    # The trigger still maps a conventionally named signal, and says what is wrong for any other.
    assert _monitor_breach(monitor_run("msft_data-drift")).ticker == "MSFT"
    assert "RETRAIN_MONITOR_SIGNAL_TICKERS is" in _monitor_breach(monitor_run("other")).problem
