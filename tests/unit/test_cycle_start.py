"""The one way in (retrain/cycle_start.py): what it refuses before it asks the orchestration store, and
the inputs it builds (the store's side, with a real Durable client against the local host, is in
tests/integration/test_fleet_start.py)."""

from __future__ import annotations

import asyncio

import pytest

from retrain import cycle_start
from retrain.workflow import MAX_REASON_CHARS

ENV = {"RETRAIN_TICKERS": "MSFT", "RETRAIN_SOURCE": "sample", "RETRAIN_TRAINER": "ridge"}


@pytest.mark.parametrize(
    ("start", "says"),
    [
        (lambda: cycle_start.start_fleet(None, ["MS FT"], "http", environ=ENV), "tickers:"),
        (
            lambda: cycle_start.start_fleet(None, ["MSFT"], "http", environ=ENV, trainer="xgb"),
            "unknown trainer",
        ),
        (lambda: cycle_start.start_fleet(None, [], "http", environ=ENV), "tickers is empty"),
        (
            lambda: cycle_start.start_fleet(None, "MSFT", "http", environ=ENV),
            "expected a list of ticker symbols",
        ),
        (
            lambda: cycle_start.start_fleet(
                None, ["MSFT"], "timer", environ=ENV, instance_id="retrain-msft-2026w01"
            ),
            "not a fleet's id",
        ),
        (
            lambda: cycle_start.start_fleet(
                None, ["MSFT"], "timer", environ={**ENV, "RETRAIN_TRAINING_BATCH": "0"}
            ),
            "RETRAIN_TRAINING_BATCH",
        ),
    ],
)
def test_bad_starts_are_refused_before_the_store_is_asked(start, says):
    # No client: a refusal never reaches it.
    with pytest.raises(cycle_start.InvalidStart, match=says.replace("(", r"\(")):
        asyncio.run(start())


def test_the_inputs_carry_the_trigger_its_reason_and_the_overrides():
    cycle = cycle_start.cycle_input(" msft", "azureml_monitor", reason="x" * 5000, environ=ENV, force=True)
    assert (cycle["ticker"], cycle["trigger"], cycle["force"]) == ("MSFT", "azureml_monitor", True)
    assert len(cycle["reason"]) == MAX_REASON_CHARS
    fleet = cycle_start.fleet_input(["aapl", "MSFT", "AAPL"], "timer", environ=ENV, lookback_days=400)
    assert fleet["tickers"] == ["AAPL", "MSFT"] and fleet["cycle"]["trigger"] == "timer"
    assert fleet["cycle"]["lookback_days"] == 400 and set(fleet["serving_targets"]) == {"AAPL", "MSFT"}
    # Azure ML monitoring's breach starts a fleet of one: its trigger and reason are the fleet's (the
    # model's trigger and trigger_reason tags).
    one = cycle_start.fleet_input(["msft"], "azureml_monitor", reason="x" * 5000, environ=ENV)
    assert one["tickers"] == ["MSFT"] and one["cycle"]["trigger"] == "azureml_monitor"
    assert len(one["cycle"]["reason"]) == MAX_REASON_CHARS
