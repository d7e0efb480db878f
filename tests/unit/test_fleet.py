"""The fleet cycle's pure parts (retrain/fleet.py): its input built from the settings and held to the
edge's rules, batches, the bounded custom status, and a platform that cannot train batches. The
orchestrations themselves run through the real local host in tests/integration/test_fleet_cycle.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from retrain import adapters, naming
from retrain.activities import report_failures
from retrain.fleet import (
    AWAITING_BUDGET_CHARS,
    MAX_FLEET_BATCHES,
    MAX_FLEET_TICKERS,
    STATUS_MAX_CHARS,
    FleetInput,
    InvalidFleetInput,
    awaiting_entry,
    plan_batches,
    validate_fleet_input,
)
from retrain.rollout import answer_key
from tests.integration.memory_platform import MemoryPlatform

ENV = {"RETRAIN_SOURCE": "sample", "RETRAIN_TRAINER": "ridge", "RETRAIN_PLATFORM": "local"}


def fleet(**changes: Any) -> dict[str, Any]:
    data = FleetInput.from_settings(["MSFT", "AAPL", "IBM"], "http", ENV).to_dict()
    return {**data, **changes}


def test_the_input_comes_from_the_settings_with_one_serving_target_per_ticker():
    built = FleetInput.from_settings(["msft", "AAPL", "MSFT", " ibm "], "timer", ENV)
    assert built.tickers == ["MSFT", "AAPL", "IBM"]  # canonical, once each, in the order asked
    assert built.serving_targets == dict.fromkeys(built.tickers, "fleet-models")  # the default layout
    assert (built.batch_size, built.max_parallel_batches) == (50, 4)
    assert "ticker" not in built.cycle and "serving_target" not in built.cycle
    assert built.cycle["trigger"] == "timer" and built.cycle["naming_version"] == naming.NAMING_VERSION
    assert (
        built.ticker_cycle("IBM").ticker == "IBM"
        and built.ticker_cycle("IBM").serving_target == "fleet-models"
    )
    assert validate_fleet_input(built.to_dict()) == built

    env = {**ENV, "RETRAIN_ENDPOINTS": "tech=MSFT,AAPL", "RETRAIN_TRAINING_BATCH": "2"}
    grouped = FleetInput.from_settings(["MSFT", "IBM"], "http", env, source="csv:{ticker}.csv")
    assert grouped.serving_targets == {"MSFT": "tech-models", "IBM": "fleet-models"}
    assert grouped.batch_size == 2 and grouped.cycle["source"] == "csv:{ticker}.csv"
    assert grouped.batches() == [["MSFT", "IBM"]]


def test_bad_settings_are_refused_naming_what_to_set():
    with pytest.raises(InvalidFleetInput, match="RETRAIN_ENDPOINTS"):
        FleetInput.from_settings(["MSFT"], "http", {**ENV, "RETRAIN_ENDPOINTS": "tech=MSFT;misc=MSFT"})
    with pytest.raises(InvalidFleetInput, match="AZURE_SUBSCRIPTION_ID"):
        FleetInput.from_settings(["MSFT"], "http", {**ENV, "RETRAIN_PLATFORM": "azureml"})
    with pytest.raises(InvalidFleetInput, match="batch_size=0"):
        FleetInput.from_settings(["MSFT"], "http", {**ENV, "RETRAIN_TRAINING_BATCH": "0"})


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"tickers": "MSFT"}, "expected a list of ticker symbols"),
        ({"tickers": []}, "send at least one ticker"),
        ({"tickers": ["msft", "AAPL", "IBM"]}, "canonical symbols"),
        ({"tickers": ["MSFT", "MSFT", "AAPL", "IBM"]}, "each once"),
        ({"tickers": ["MSFT", "AAPL", "IB M"]}, "invalid ticker"),
        ({"tickers": [f"T{i}" for i in range(MAX_FLEET_TICKERS + 1)]}, f"at most {MAX_FLEET_TICKERS}"),
        ({"batch_size": 0}, "batch_size=0: expected an integer from 1"),
        ({"batch_size": True}, "batch_size=True"),
        ({"max_parallel_batches": 100}, "max_parallel_batches=100"),
        ({"serving_targets": {"MSFT": "fleet-models"}}, "missing ['AAPL', 'IBM']"),
        (
            {"serving_targets": {"MSFT": "x", "AAPL": "fleet-models", "IBM": "fleet-models"}},
            "serving_targets[MSFT]",
        ),
        ({"cycle": None}, "cycle=None: expected an object"),
        ({"shards": 3}, "unknown fleet input field(s) 'shards'"),
        ({"breaches": {"XOM": {"trigger": "drift", "reason": "r"}}}, "breaches['XOM']"),
        ({"breaches": {"MSFT": {"trigger": "timer", "reason": "r"}}}, "one of drift, performance"),
        ({"breaches": {"MSFT": {"trigger": "drift", "reason": "r" * 2001}}}, "breaches['MSFT']"),
        ({"breaches": ["MSFT"]}, "breaches=['MSFT']"),
    ],
)
def test_a_bad_input_is_refused_naming_the_field_and_what_to_send(changes, named):
    with pytest.raises(InvalidFleetInput) as refused:
        validate_fleet_input(fleet(**changes))
    assert named in str(refused.value)


def test_the_shared_cycle_settings_are_held_to_a_cycles_rules():
    base = fleet()
    for cycle, named in (
        ({**base["cycle"], "gate_alpha": 1.0}, "cycle: gate_alpha=1.0"),
        ({**base["cycle"], "naming_version": None}, "cycle.naming_version=None"),
        ({**base["cycle"], "source": "yfinance:{ticker}"}, "cycle: source='yfinance:{ticker}': expected"),
        ({**base["cycle"], "source": "csv:{ticker}-{date}.csv"}, "the one placeholder is {ticker}"),
        ({**base["cycle"], "trainer": "../../etc"}, "cycle: "),
    ):
        with pytest.raises(InvalidFleetInput, match=named.replace("(", r"\(").replace("{", r"\{")):
            validate_fleet_input({**base, "cycle": cycle})
    assert validate_fleet_input({**base, "cycle": {**base["cycle"], "source": "csv:{ticker}.csv"}})
    assert validate_fleet_input(
        {**base, "cycle": {**base["cycle"], "ticker": "ZZZ"}}
    )  # unused: each ticker's own


def test_too_many_batches_for_the_status_are_refused_with_the_batch_size_to_set():
    tickers = [f"T{i}" for i in range(MAX_FLEET_BATCHES * 2 + 1)]
    data = {**fleet(), "tickers": tickers, "serving_targets": dict.fromkeys(tickers, "fleet-models")}
    with pytest.raises(InvalidFleetInput, match="raise RETRAIN_TRAINING_BATCH to at least 3"):
        validate_fleet_input({**data, "batch_size": 2})
    assert len(validate_fleet_input({**data, "batch_size": 3}).batches()) == 67


def test_batches_keep_the_order_and_the_last_may_be_smaller():
    assert plan_batches(["A", "B", "C", "D", "E"], 2) == [["A", "B"], ["C", "D"], ["E"]]
    assert plan_batches(["A"], 50) == [["A"]] and plan_batches([], 3) == []


def test_the_largest_fleet_awaits_its_endpoint_within_the_custom_status_cap():
    """Azure caps a custom status at 16 KB of UTF-16 (8192 characters): the entry naming the batches of
    one endpoint's challengers fits the fleet's budget even with the most batches a fleet may have."""
    fleet_id = naming.fleet_instance_id(datetime(2026, 12, 6, 10, 15, tzinfo=UTC))
    batches = [naming.batch_instance_id(fleet_id, i) for i in range(MAX_FLEET_BATCHES)]
    entry = awaiting_entry(fleet_id, "abcdefghijkl-models-abc123", batches)
    assert len(json.dumps([entry])) <= AWAITING_BUDGET_CHARS < STATUS_MAX_CHARS < 8192


def test_a_fleets_challengers_are_answered_per_ticker_a_cycle_per_instance():
    assert answer_key("retrain-msft-20261206t101500z", "MSFT") == "retrain-msft-20261206t101500z"
    assert answer_key("fleet-2026w49", "MSFT") == "fleet-2026w49/MSFT"


class NoBatches(MemoryPlatform):
    submit_batch_training = None  # type: ignore[assignment]  # a platform without TrainsBatches


def no_batches() -> NoBatches:
    return NoBatches()


def test_a_platform_that_cannot_train_batches_fails_a_batch_permanently_saying_so(monkeypatch):
    from retrain import batch_jobs

    monkeypatch.setenv("RETRAIN_PLATFORM", f"{__name__}:no_batches")
    adapters.reset()
    try:
        answer = report_failures(batch_jobs.judge_batch)({"job_name": "j", "tickers": {}, "gate": {}})
    finally:
        adapters.reset()
    failure = answer["activity_error"]
    assert failure["kind"] == "permanent"
    assert (
        "the NoBatches platform cannot train batches" in failure["message"]
        and "TrainsBatches" in failure["message"]
    )
