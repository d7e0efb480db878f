"""The fleet monitor's pure parts (retrain/monitoring/fleet_monitor.py): its request and input, the score
units by serving target, its ids and the fleet's trigger. The orchestration runs through the real local
host in tests/integration/test_fleet_monitor_host.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from retrain import naming
from retrain.fleet import FleetInput
from retrain.monitoring.fleet_monitor import (
    CHECK_CHUNK,
    fleet_monitor_instance_id,
    fleet_trigger,
    is_fleet_monitor_instance_id,
    plan_units,
)
from retrain.monitoring.orchestration import (
    MonitorRequestError,
    is_monitor_instance_id,
    parse_monitor_request,
)

ENV = {"RETRAIN_TICKERS": "MSFT", "RETRAIN_SOURCE": "sample", "RETRAIN_ENDPOINTS": "tech=MSFT,AAPL"}


def test_a_tickers_request_is_the_fleet_monitors_input_with_units_by_serving_target() -> None:
    spec = parse_monitor_request({"tickers": ["msft", "IBM", "AAPL", "XOM"], "from": "2012-07-06"}, ENV)
    assert spec["tickers"] == ["MSFT", "IBM", "AAPL", "XOM"] and spec["days"] == ["2012-07-06"]
    assert spec["units"] == [["MSFT", "AAPL", "IBM", "XOM"]]  # two endpoints, packed in one activity
    assert spec["chunk"] == CHECK_CHUNK and spec["thresholds"]["drift"] == 0.487
    assert parse_monitor_request({"tickers": "MSFT, IBM", "from": "2012-07-06"}, ENV)["tickers"] == [
        "MSFT",
        "IBM",
    ]


def test_units_keep_an_endpoints_tickers_together_and_pack_small_groups() -> None:
    targets = {"A": "e1", "B": "e2", "C": "e1", "D": "e3", "E": "e2"}
    assert plan_units(list(targets), targets, limit=4) == [["A", "C", "B", "E"], ["D"]]
    big = {f"T{i}": "shared" for i in range(5)} | {"X": "own"}
    assert plan_units(list(big), big, limit=2) == [["T0", "T1"], ["T2", "T3"], ["T4", "X"]]
    per_ticker = {f"T{i}": f"t{i}-forecast" for i in range(7)}
    assert [len(u) for u in plan_units(list(per_ticker), per_ticker, limit=3)] == [3, 3, 1]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"ticker": "MSFT", "tickers": ["IBM"]}, "not both"),
        ({"tickers": []}, "send at least one ticker"),
        ({"tickers": ["MSFT", "IB M"]}, "invalid ticker"),
        ({"tickers": "@/etc/tickers"}, "expected a list of ticker symbols"),
        ({"tickers": [f"T{i}" for i in range(26)], "from": "2012-01-02", "to": "2013-01-02"}, "ticker-days"),
    ],
)
def test_bad_fleet_requests_say_what_to_send(body: object, says: str) -> None:
    with pytest.raises(MonitorRequestError, match=says):
        parse_monitor_request(body, ENV)


def test_ids_are_never_a_per_ticker_monitors_or_a_fleets() -> None:
    now = datetime(2026, 12, 7, 21, 30, 5, tzinfo=UTC)
    daily, replay = (
        fleet_monitor_instance_id(None, now, scheduled=True),
        fleet_monitor_instance_id("2012-07-02", now),
    )
    assert (daily, replay) == ("fleetmonitor-20261207", "fleetmonitor-20120702-213005")
    for instance_id in (daily, replay):
        assert is_fleet_monitor_instance_id(instance_id) and is_monitor_instance_id(instance_id)
        assert (
            naming.parse_fleet_instance_id(instance_id) is None
            and naming.parse_instance_id(instance_id) is None
        )
    assert not is_fleet_monitor_instance_id("monitor-fleet-20261207")  # the ticker FLEET's monitor


def test_one_fleet_trigger_for_the_day_and_each_tickers_own_in_the_fleets_input() -> None:
    drift = {"trigger": "drift", "reason": "KS", "date": "2012-07-31"}
    assert fleet_trigger({"A": drift}) == "drift"
    assert fleet_trigger({"A": drift, "B": {**drift, "trigger": "performance"}}) == "performance"
    breaches = {"MSFT": {"trigger": "performance", "reason": "CUSUM"}}
    fleet = FleetInput.from_settings(
        ["MSFT", "IBM"], "drift", {"RETRAIN_SOURCE": "sample"}, breaches=breaches
    )
    assert fleet.breaches == breaches and fleet.cycle["trigger"] == "drift"
