"""The monitor orchestrator driven by a fake durable context (samples-v2 style, as test_workflow.py does
for the retraining orchestrator): an orchestrator reads no app settings, so a replay after a settings
change runs the same code path with the inputs its first execution recorded."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

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

    def call_sub_orchestrator(self, name: str, payload: Any, instance_id: str) -> Task:
        return Task("sub", name, {"input": payload, "instance_id": instance_id})


def day_result(day: str, trigger: dict[str, str] | None) -> dict[str, Any]:
    return {"date": day, "forecast": None, "metrics": {}, "alerts": [], "trigger": trigger}


def drive(answers: dict[str, Any]) -> tuple[list[Task], Any]:
    """Run the orchestrator to its end; `answers[name]` answers an activity (a callable of its payload)."""
    spec = {"ticker": "MSFT", "days": DAYS, "source": "sample", "thresholds": {}}
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


def test_a_trigger_starts_the_cycle_with_the_input_an_activity_read_from_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Settings the orchestrator would refuse if it read them itself: the cycle input comes from the
    # activity's answer (recorded in the history), never from the orchestrator reading app settings.
    monkeypatch.setenv("RETRAIN_TRAINER", "no-such-trainer")
    recorded_cycle = {"ticker": "MSFT", "trigger": "drift", "trainer": "ridge", "as_of": DAYS[1]}
    answers = {
        "monitor_day": lambda p: day_result(
            p["as_of"], {"trigger": "drift", "reason": "CUSUM on returns"} if p["as_of"] == DAYS[1] else None
        ),
        "monitor_cycle_input": lambda p: dict(recorded_cycle),
        "monitor_running_cycle": lambda p: None,
        ORCHESTRATOR_NAME: lambda p: {"status": "deployed"},
        "monitor_record_retrain": lambda p: p,
    }
    seen, summary = drive(answers)

    asked = [t for t in seen if t.name == "monitor_cycle_input"]
    assert [t.payload for t in asked] == [
        {
            "ticker": "MSFT",
            "trigger": "drift",
            "source": "sample",
            "as_of": DAYS[1],
            "reason": "CUSUM on returns",
        }
    ]
    (cycle,) = [t for t in seen if t.kind == "sub"]
    assert cycle.name == ORCHESTRATOR_NAME and cycle.payload["input"] == recorded_cycle
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
