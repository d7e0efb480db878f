"""The monitor orchestrator driven by a fake durable context (samples-v2 style, as test_workflow.py does
for the retraining orchestrator): an orchestrator reads no app settings, so a replay after a settings
change runs the same code path with the inputs its first execution recorded. A breach retrains a fleet
of one (`fleet.FLEET_ORCHESTRATOR`); a monitor started by older code (no `retrain_as`) replays its
per-ticker cycle."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from retrain.fleet import FLEET_ORCHESTRATOR
from retrain.monitoring import orchestration
from retrain.workflow import ORCHESTRATOR_NAME

DAYS = ["2026-01-05", "2026-01-06"]


class Task:
    def __init__(self, kind: str, name: str, payload: Any) -> None:
        self.kind, self.name, self.payload = kind, name, payload


class FakeContext:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.instance_id = "monitor-msft-20260105"
        self.current_utc_datetime = datetime(2026, 1, 5, 22, 0, tzinfo=UTC)
        self._spec = spec
        self.custom_status: Any = None

    def get_input(self) -> dict[str, Any]:
        return self._spec

    def set_custom_status(self, status: Any) -> None:
        self.custom_status = status

    def call_activity(self, name: str, payload: Any) -> Task:
        return Task("activity", name, payload)

    def call_activity_with_retry(self, name: str, retry: Any, payload: Any) -> Task:
        return Task("activity", name, payload)

    def call_sub_orchestrator(self, name: str, payload: Any, instance_id: str) -> Task:
        return Task("sub", name, {"input": payload, "instance_id": instance_id})


def day_result(day: str, trigger: dict[str, str] | None) -> dict[str, Any]:
    return {"date": day, "forecast": None, "metrics": {}, "alerts": [], "trigger": trigger}


SPEC = {"ticker": "MSFT", "days": DAYS, "source": "sample", "thresholds": {}, "retrain_as": "fleet"}
LEGACY_SPEC = {k: v for k, v in SPEC.items() if k != "retrain_as"}  # a monitor started by older code


def drive(answers: dict[str, Any], spec: dict[str, Any] = SPEC) -> tuple[list[Task], Any]:
    """Run the orchestrator to its end; `answers[name]` answers an activity (a callable of its payload)."""
    orchestrator = orchestration.monitor_orchestrator.build().get_user_function().orchestrator_function
    generator = orchestrator(FakeContext(spec))
    seen: list[Task] = []
    value: Any = None
    while True:
        try:
            task = generator.send(value)
        except StopIteration as stop:
            return seen, stop.value
        seen.append(task)
        value = answers[task.name](task.payload)


def breach_on_day_two(p: dict[str, Any]) -> dict[str, Any]:
    trigger = {"trigger": "drift", "reason": "CUSUM on returns"} if p["as_of"] == DAYS[1] else None
    return day_result(p["as_of"], trigger)


@pytest.mark.parametrize("outcome", [{"status": "deployed"}, {"status": "failed", "error": "fit: singular"}])
def test_a_trigger_starts_a_fleet_of_one_with_the_input_an_activity_read_from_the_settings(
    monkeypatch: pytest.MonkeyPatch, outcome: dict[str, Any]
) -> None:
    # Settings the orchestrator would refuse if it read them itself: the fleet's input comes from the
    # activity's answer (recorded in the history), never from the orchestrator reading app settings.
    monkeypatch.setenv("RETRAIN_TRAINER", "no-such-trainer")
    recorded_fleet = {"tickers": ["MSFT"], "cycle": {"trigger": "drift", "trainer": "ridge"}}
    answers = {
        "monitor_day": breach_on_day_two,
        "monitor_fleet_input": lambda p: {"fleet": dict(recorded_fleet), "skipped": {}},
        FLEET_ORCHESTRATOR: lambda p: {"status": "completed", "tickers": {"MSFT": outcome}},
        "monitor_record_retrain": lambda p: p,
    }
    seen, summary = drive(answers)

    asked = [t for t in seen if t.name == "monitor_fleet_input"]
    breach = {"trigger": "drift", "reason": "CUSUM on returns"}
    assert [t.payload for t in asked] == [
        {
            "tickers": ["MSFT"],
            "trigger": "drift",
            "reason": "CUSUM on returns",
            "breaches": {"MSFT": breach},  # the model's trigger and trigger_reason tags
            "source": "sample",
            "as_of": DAYS[1],
        }
    ]
    (fleet,) = [t for t in seen if t.kind == "sub"]
    assert fleet.name == FLEET_ORCHESTRATOR and fleet.payload["input"] == recorded_fleet
    assert fleet.payload["instance_id"] == "fleet-20260105t220000000000z"  # from the context's clock
    expected = "deployed" if outcome["status"] == "deployed" else "failed: fit: singular"
    (retrain,) = summary["retrains"]
    assert (retrain["status"], retrain["instance_id"]) == (expected, fleet.payload["instance_id"])
    (recorded,) = [t.payload for t in seen if t.name == "monitor_record_retrain"]
    assert recorded["status"] == expected


def test_a_held_ticker_is_skipped_and_names_its_holder() -> None:
    answers = {
        "monitor_day": breach_on_day_two,
        "monitor_fleet_input": lambda p: {"fleet": None, "skipped": {"MSFT": "fleet-2026w02"}},
        "monitor_record_retrain": lambda p: p,
    }
    seen, summary = drive(answers)
    assert not [t for t in seen if t.kind == "sub"]
    (retrain,) = summary["retrains"]
    assert retrain["instance_id"] == "fleet-2026w02" and retrain["status"].startswith("skipped")


def test_a_monitor_started_by_older_code_replays_its_per_ticker_cycle() -> None:
    # Its history recorded monitor_cycle_input, monitor_running_cycle and retrain_orchestrator: a replay
    # must ask the same, in the same order.
    recorded_cycle = {"ticker": "MSFT", "trigger": "drift", "trainer": "ridge", "as_of": DAYS[1]}
    answers = {
        "monitor_day": breach_on_day_two,
        "monitor_cycle_input": lambda p: dict(recorded_cycle),
        "monitor_running_cycle": lambda p: None,
        ORCHESTRATOR_NAME: lambda p: {"status": "deployed"},
        "monitor_record_retrain": lambda p: p,
    }
    seen, summary = drive(answers, LEGACY_SPEC)
    names = [t.name for t in seen if t.name != "monitor_day"]
    assert names == [
        "monitor_cycle_input",
        "monitor_running_cycle",
        ORCHESTRATOR_NAME,
        "monitor_record_retrain",
    ]
    (cycle,) = [t for t in seen if t.kind == "sub"]
    assert cycle.payload["input"] == recorded_cycle
    assert [r["status"] for r in summary["retrains"]] == ["deployed"]


def test_the_cycle_input_activity_reads_the_settings_and_says_what_is_wrong(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    activity = orchestration.monitor_cycle_input.build().get_user_function()
    monkeypatch.setenv("RETRAIN_TRAINER", "ridge")
    cycle = activity(
        {"ticker": "MSFT", "trigger": "drift", "source": "sample", "as_of": DAYS[0], "reason": "r"}
    )
    assert cycle["trainer"] == "ridge" and cycle["trigger"] == "drift" and cycle["as_of"] == DAYS[0]
    monkeypatch.setenv("RETRAIN_TRAINER", "no-such-trainer")
    with pytest.raises(Exception, match="no-such-trainer"):
        activity({"ticker": "MSFT", "trigger": "drift", "source": "sample", "as_of": DAYS[0], "reason": "r"})
