"""Operator traffic control through the real local host (in-memory ML platform): POST
/api/endpoints/{ticker}/traffic and /rollback set the endpoint's traffic through the MLPlatform port,
wait until it is applied, record it in the served ledger as `operator`, and refuse a bad table (400) or a
change while a cycle of the ticker runs (409). Issue 20, item 3."""

from __future__ import annotations

import threading

import pytest

from retrain.host_client import http_json
from retrain.monitoring.ledger import SqliteLedger
from tests.helpers import outcome, run_cycle, start, wait, wait_for


def post(host, ticker: str, action: str, body=None, key: bool = True):
    url = f"{host.url}/api/endpoints/{ticker}/{action}" + (f"?code={host.function_key}" if key else "")
    return http_json("POST", url, body if body is not None else {})


def test_an_operator_sets_traffic_and_rolls_back_recorded_as_operator(host, memory, tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAIN_KEEP_OLD_SLOT", "true")  # v1 stays cold in blue after v2 takes green
    assert outcome(run_cycle(host))["status"] == "deployed"
    second = outcome(run_cycle(host))
    assert second["status"] == "deployed"
    assert memory.get_endpoint("msft-forecast").traffic == {"blue": 0, "green": 100}
    # The endpoint's rollout tells the cycle its outcome, then looks once more for waiting challengers
    # before it ends; until then it owns the endpoint's traffic (an operator gets 409, tested below).
    rollout = second["rollout"]
    wait_for(
        "the endpoint's rollout to end",
        lambda: (host.engine.get_status(rollout) or {}).get("runtimeStatus") == "Completed" or None,
        60,
        lambda: None,
    )

    code, answer = post(host, "MSFT", "traffic", {"traffic": {"blue": 100, "green": 0}})
    assert code == 200, answer
    assert answer["traffic"] == {"blue": 100, "green": 0} and answer["traffic_before"]["green"] == 100
    assert memory.get_endpoint("msft-forecast").traffic == {
        "blue": 100,
        "green": 0,
    }  # applied, not only asked

    code, answer = post(host, "msft", "rollback")  # back to the champion (v2, in green)
    assert code == 200, answer
    assert memory.get_endpoint("msft-forecast").traffic == {"blue": 0, "green": 100}
    code, answer = post(host, "MSFT", "rollback")  # the champion has it all: to the previous model
    assert code == 200 and memory.get_endpoint("msft-forecast").traffic == {"blue": 100, "green": 0}

    events = SqliteLedger(tmp_path / "monitoring" / "ledger.sqlite").events("msft-forecast")
    assert [e.reason for e in events][-3:] == ["operator"] * 3
    assert {s.slot: (s.model_version, s.weight) for s in events[-1].slots}["blue"] == ("1", 100)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"traffic": {"red": 100}}, "unknown slot 'red': the slots are blue, green"),
        ({"traffic": {"blue": 60}}, "must sum to 100, not 60"),
        ({"traffic": {"blue": 0, "green": 0}}, "all 0 would leave no slot serving"),
        ({"traffic": {"blue": 100.0}}, "must be an integer from 0 to 100"),
        ({"traffic": {}}, 'send e.g. {"traffic": {"blue": 100'),
        ({"blue": 100}, "one field, traffic"),
    ],
)
def test_a_bad_table_is_refused_with_what_to_send(host, memory, body, needle):
    code, answer = post(host, "MSFT", "traffic", body)
    assert code == 400 and needle in answer["error"], answer
    assert not [c for c, _ in memory.calls if c == "set_traffic"]


def test_no_change_while_a_cycle_of_the_ticker_runs_and_none_without_the_key(host, memory):
    assert outcome(run_cycle(host))["status"] == "deployed"
    release = threading.Event()
    memory.script.job_release = release
    code, answer = start(host, {"ticker": "MSFT"})
    assert code == 202, answer
    try:
        code, busy = post(host, "MSFT", "traffic", {"traffic": {"blue": 100}})
        assert code == 409 and answer["id"] in busy["error"] and "owns the endpoint" in busy["error"], busy
        code, busy = post(host, "MSFT", "rollback")
        assert code == 409, busy
    finally:
        release.set()
    assert outcome(wait(host, answer["id"]))["status"] == "deployed"
    code, _ = post(host, "MSFT", "traffic", {"traffic": {"blue": 100}}, key=False)
    assert code == 401
    code, answer = post(host, "NOPE", "rollback")
    assert code == 404 and "does not exist" in answer["error"], answer
