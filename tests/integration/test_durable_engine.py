"""The local durable engine against the real azure-functions-durable SDK (tests/durable_app)."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from functions_host.durable import (
    DurableEngine,
    FunctionNotFoundError,
    InstanceExistsError,
    InstanceGone,
    InstanceNotFound,
    InstanceStillRunning,
)
from tests.durable_app.adapter import AppFunctions, load_app_module

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture(scope="module")
def app() -> AppFunctions:
    return AppFunctions(load_app_module())


@pytest.fixture
def activity_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "activities.log"
    monkeypatch.setenv("DURABLE_TEST_LOG", str(path))
    return path


@pytest.fixture
def engine(tmp_path: Path, app: AppFunctions, activity_log: Path) -> Iterator[DurableEngine]:
    eng = DurableEngine(
        tmp_path / "durable.db", app.run_orchestrator, app.run_activity, has_function=app.has_function
    )
    eng.start()
    yield eng
    eng.close()


def run(engine: DurableEngine, name: str, input_: object = None, timeout: float = 15) -> dict:
    instance_id = engine.start_new(name, None, None if input_ is None else json.dumps(input_))
    return engine.wait_for_completion(instance_id, timeout)


def event_types(engine: DurableEngine, instance_id: str) -> list[str]:
    return [e["EventType"] for e in engine.get_status(instance_id, show_history=True)["historyEvents"]]


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_sequence_of_sync_and_async_activities(engine: DurableEngine) -> None:
    status = run(engine, "sequence", 3)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == {"doubled": 12, "hello": "Hello durable!"}
    assert status["input"] == 3 and status["name"] == "sequence"
    assert ISO_Z.match(status["createdTime"]) and ISO_Z.match(status["lastUpdatedTime"])
    types = event_types(engine, status["instanceId"])
    assert types[:2] == ["OrchestratorStarted", "ExecutionStarted"]
    assert types.count("TaskScheduled") == 3 and types.count("TaskCompleted") == 3
    assert types[-2:] == ["ExecutionCompleted", "OrchestratorCompleted"]


def test_history_output_only_when_asked(engine: DurableEngine) -> None:
    status = run(engine, "sequence", 1)
    plain = engine.get_status(status["instanceId"], show_history=True)["historyEvents"]
    full = engine.get_status(status["instanceId"], show_history=True, show_history_output=True)[
        "historyEvents"
    ]
    assert all("Result" not in e for e in plain)
    assert [e["Result"] for e in full if e["EventType"] == "TaskCompleted"] == ["2", "4", '"Hello durable!"']
    assert engine.get_status(status["instanceId"], show_input=False)["input"] is None


def test_task_all_fan_out_and_custom_status(engine: DurableEngine) -> None:
    status = run(engine, "fan_out", 6)
    assert status["output"] == sum(2 * i for i in range(6))
    assert status["customStatus"] == {"done": 6}


def test_retry_fails_then_succeeds_with_durable_timer(engine: DurableEngine, activity_log: Path) -> None:
    started = time.monotonic()
    status = run(
        engine, "with_retry", {"key": "succeeds", "fail_times": 2, "attempts": 5, "interval_ms": 150}
    )
    elapsed = time.monotonic() - started
    assert status["output"] == {"result": "succeeds ok after 3", "after": 42}
    assert activity_log.read_text().splitlines() == [
        "flaky succeeds 1",
        "flaky succeeds 2",
        "flaky succeeds 3",
    ]
    assert elapsed >= 0.3  # two retry timers of first_retry_interval each
    types = event_types(engine, status["instanceId"])
    assert (
        types.count("TaskFailed") == 2 and types.count("TimerCreated") == 2 and types.count("TimerFired") == 2
    )
    assert types.count("TaskScheduled") == 4  # three attempts, then `double`


def test_retry_exhausted_raises_last_error_in_orchestrator(engine: DurableEngine, activity_log: Path) -> None:
    status = run(
        engine, "with_retry", {"key": "exhausts", "fail_times": 10, "attempts": 3, "interval_ms": 50}
    )
    assert status["runtimeStatus"] == "Completed"
    assert "flaky exhausts attempt 3 failed" in status["output"]["error"]
    assert activity_log.read_text().splitlines() == [f"flaky exhausts {i}" for i in (1, 2, 3)]


def test_event_beats_timer_and_timer_is_cancelled(engine: DurableEngine) -> None:
    instance_id = engine.start_new("event_or_timeout", None, "30")
    engine.raise_event(instance_id, "approval", json.dumps({"ok": True}))
    status = engine.wait_for_completion(instance_id, 10)
    assert status["output"] == {"winner": "event", "value": {"ok": True}}
    assert "TimerFired" not in event_types(engine, instance_id)
    with engine._store.reading() as conn:  # the cancelled timer is gone from the work queue
        assert conn.execute("SELECT COUNT(*) FROM work").fetchone()[0] == 0


def test_timer_beats_event(engine: DurableEngine) -> None:
    instance_id = engine.start_new("event_or_timeout", None, "0.2")
    status = engine.wait_for_completion(instance_id, 10)
    assert status["output"] == {"winner": "timer"}
    assert "TimerFired" in event_types(engine, instance_id)
    engine.raise_event(instance_id, "approval", "1")  # late events for a finished instance are dropped
    assert engine.get_status(instance_id)["output"] == {"winner": "timer"}


def test_events_raised_before_waiting_are_buffered_in_order(engine: DurableEngine) -> None:
    instance_id = engine.start_new("collect_events", None, "3")
    for value in ("first", "second", "third"):
        engine.raise_event(instance_id, "item", json.dumps(value))
    status = engine.wait_for_completion(instance_id, 10)
    assert status["output"] == ["first", "second", "third"]


def test_continue_as_new_keeps_id_and_carries_events_over(engine: DurableEngine) -> None:
    instance_id = engine.start_new("counter", "ticker", json.dumps({"n": 0, "limit": 3}))
    for tick in ("a", "b", "c"):
        engine.raise_event(instance_id, "tick", json.dumps(tick))
    status = engine.wait_for_completion(instance_id, 10)
    assert instance_id == "ticker"
    assert status["output"] == {"n": 3, "limit": 3, "ticks": ["a", "b", "c"]}
    assert status["input"] == {"n": 3, "limit": 3, "ticks": ["a", "b", "c"]}
    # the last generation's history is fresh: it starts from its own ExecutionStarted
    assert event_types(engine, instance_id).count("ExecutionStarted") == 1


def test_terminate_and_instance_id_reuse(engine: DurableEngine) -> None:
    instance_id = engine.start_new("waits_forever", "stuck", None)
    wait_until(lambda: engine.get_status(instance_id)["runtimeStatus"] == "Running")
    with pytest.raises(InstanceExistsError, match="already running"):
        engine.start_new("waits_forever", "stuck", None)
    engine.terminate(instance_id, "no longer needed")
    status = engine.wait_for_completion(instance_id, 10)
    assert status["runtimeStatus"] == "Terminated" and status["output"] == "no longer needed"
    assert event_types(engine, instance_id)[-1] == "ExecutionTerminated"
    assert [s["instanceId"] for s in engine.list_instances(["Terminated"])] == ["stuck"]
    engine.start_new("sequence", "stuck", "1")  # a finished id may be started again
    assert engine.wait_for_completion("stuck", 10)["output"]["doubled"] == 4


def test_non_determinism_fails_the_instance(engine: DurableEngine, app: AppFunctions) -> None:
    instance_id = engine.start_new("nondeterministic", None, None)
    # the episode that recorded the activity's completion (and the wait for "go") is committed
    wait_until(lambda: "TaskCompleted" in event_types(engine, instance_id))
    app.module.NONDETERMINISTIC_FIRST = "noop"  # the code changes under the running instance
    try:
        engine.raise_event(instance_id, "go", None)
        status = engine.wait_for_completion(instance_id, 10)
    finally:
        app.module.NONDETERMINISTIC_FIRST = "double"
    assert status["runtimeStatus"] == "Failed"
    assert "Non-deterministic workflow detected" in status["output"]
    assert "CallActivity(double)" in status["output"] and "CallActivity(noop)" in status["output"]
    # the engine found the fault, not the orchestrator: the last committed custom status stays
    assert status["customStatus"] == {"step": "waiting for go"}


def test_unsupported_action_names_it(engine: DurableEngine) -> None:
    status = run(engine, "uses_http")
    assert status["runtimeStatus"] == "Failed"
    assert "CallHttp" in status["output"] and "not support" in status["output"]


def test_orchestrator_exception_fails_instance(engine: DurableEngine) -> None:
    status = run(engine, "raises")
    assert status["runtimeStatus"] == "Failed"
    assert status["output"] == "Orchestrator function 'raises' failed: the orchestrator gave up"


def test_orchestrator_exception_keeps_custom_status(engine: DurableEngine) -> None:
    status = run(engine, "raises_with_status")
    assert status["runtimeStatus"] == "Failed"
    # the status set in the failing episode (read from the SDK's $OutOfProcData$ state), as in Azure
    assert status["customStatus"] == {"step": "evaluate", "done": ["train"], "value": 2}
    assert (
        status["output"] == "Orchestrator function 'raises_with_status' failed: evaluation found no champion"
    )
    assert "$OutOfProcData$" not in json.dumps(engine.get_status(status["instanceId"], show_history=True))
    assert [s["instanceId"] for s in engine.list_instances(["Failed"])] == [status["instanceId"]]


def test_orchestrator_exception_without_custom_status_has_none(engine: DurableEngine) -> None:
    status = run(engine, "raises")
    assert status["runtimeStatus"] == "Failed" and status["customStatus"] is None


def test_list_instances_accepts_every_azure_runtime_status(engine: DurableEngine) -> None:
    done = run(engine, "sequence", 1)["instanceId"]
    waiting = engine.start_new("waits_forever", None, None)
    wait_until(lambda: engine.get_status(waiting)["runtimeStatus"] == "Running")
    every = [
        "Pending",
        "Running",
        "Completed",
        "ContinuedAsNew",
        "Failed",
        "Canceled",
        "Terminated",
        "Suspended",
    ]
    assert sorted(s["instanceId"] for s in engine.list_instances(every)) == sorted([done, waiting])
    for never_produced in ("Suspended", "Canceled"):
        assert engine.list_instances([never_produced]) == []
    assert [s["instanceId"] for s in engine.list_instances(["Suspended", "Completed"])] == [done]
    assert [s["instanceId"] for s in engine.list_instances(["Running"])] == [waiting]
    with pytest.raises(ValueError, match="Unknown runtimeStatus.*'Done'.*'Suspended'"):
        engine.list_instances(["Completed", "Done"])


def test_activity_failure_reaches_orchestrator(engine: DurableEngine) -> None:
    status = run(engine, "catches_activity_failure", "caught-key")
    assert "Activity function 'flaky' failed: flaky caught-key attempt 1 failed" in status["output"]["caught"]


def test_unknown_functions_fail_cleanly(engine: DurableEngine) -> None:
    status = run(engine, "calls_missing")
    assert "no_such_activity' doesn't exist" in status["output"]["caught"]
    with pytest.raises(FunctionNotFoundError, match="orchestration_trigger"):
        engine.start_new("no_such_orchestrator", None, None)
    with pytest.raises(InstanceNotFound):
        engine.raise_event("missing-instance", "x", None)
    with pytest.raises(InstanceNotFound):
        engine.terminate("missing-instance", None)
    assert engine.get_status("missing-instance") is None
    with pytest.raises(ValueError, match="JSON"):
        engine.start_new("sequence", None, "{not json")
    with pytest.raises(ValueError, match="Unknown runtimeStatus"):
        engine.list_instances(["Done"])


def test_sub_orchestration(engine: DurableEngine) -> None:
    status = run(engine, "parent", 5)
    assert status["output"] == {"child": {"doubled": 20, "hello": "Hello durable!"}}
    child = [s for s in engine.list_instances() if s["name"] == "sequence"]
    assert len(child) == 1 and child[0]["runtimeStatus"] == "Completed"


def test_restart_on_same_db_resumes_pending_timer(
    tmp_path: Path, app: AppFunctions, activity_log: Path
) -> None:
    db = tmp_path / "resume.db"
    first = DurableEngine(db, app.run_orchestrator, app.run_activity, has_function=app.has_function)
    first.start()
    instance_id = first.start_new("timer_then_activity", None, "0.5")
    wait_until(lambda: "TimerCreated" in event_types(first, instance_id))
    first.close()
    second = DurableEngine(db, app.run_orchestrator, app.run_activity, has_function=app.has_function)
    second.start()
    try:
        assert second.wait_for_completion(instance_id, 10)["output"] == 10
    finally:
        second.close()


def test_store_of_an_older_host_gains_versions_and_its_instances_go_on(
    tmp_path: Path, app: AppFunctions, activity_log: Path
) -> None:
    db = tmp_path / "old.db"
    first = DurableEngine(db, app.run_orchestrator, app.run_activity, has_function=app.has_function)
    first.start()
    instance_id = first.start_new("collect_events", None, "1")
    wait_until(lambda: "TaskCompleted" in event_types(first, instance_id))
    first.close()
    with sqlite3.connect(db) as conn:  # the instances table as hosts before orchestration versions wrote it
        conn.execute("ALTER TABLE instances DROP COLUMN version")
    second = DurableEngine(
        db, app.run_orchestrator, app.run_activity, has_function=app.has_function, default_version="3.0"
    )
    second.start()
    try:
        second.raise_event(instance_id, "item", json.dumps("late"))
        status = second.wait_for_completion(instance_id, 10)
        assert status["output"] == ["late"] and status["version"] == ""
        fresh = second.start_new("sequence", None, "1")
        assert second.wait_for_completion(fresh, 10)["version"] == "3.0"
        assert second.start_new("sequence", "pinned", "1", version="1.5") == "pinned"
        assert second.wait_for_completion("pinned", 10)["version"] == "1.5"
    finally:
        second.close()


def test_suspend_resume_and_purge_through_the_engine(engine: DurableEngine) -> None:
    instance_id = engine.start_new("collect_events", None, "1")
    wait_until(lambda: "TaskCompleted" in event_types(engine, instance_id))
    engine.suspend(instance_id, "hold")
    engine.wait_for_status(instance_id, ("Suspended",), 10)
    with pytest.raises(InstanceExistsError, match="already suspended"):
        engine.start_new("collect_events", instance_id, "1")
    with pytest.raises(InstanceStillRunning, match="terminate it first"):
        engine.purge(instance_id)
    engine.raise_event(instance_id, "item", json.dumps("kept"))
    time.sleep(0.5)  # room for a wrong engine to deliver it now
    assert engine.get_status(instance_id)["runtimeStatus"] == "Suspended"
    engine.resume(instance_id, "go")
    assert engine.wait_for_completion(instance_id, 10)["output"] == ["kept"]
    with pytest.raises(InstanceGone):
        engine.suspend(instance_id, None)
    assert engine.purge(instance_id) == 1 and engine.get_status(instance_id) is None
    assert engine.purge(instance_id) == 0
    with pytest.raises(InstanceNotFound):
        engine.resume("missing-instance", None)


def test_timer_due_while_suspended_waits_for_resume(
    tmp_path: Path, app: AppFunctions, activity_log: Path
) -> None:
    now = [datetime(2026, 1, 5, 9, 0, tzinfo=UTC)]  # the engine's clock, moved by the test
    engine = DurableEngine(
        tmp_path / "clock.db",
        app.run_orchestrator,
        app.run_activity,
        has_function=app.has_function,
        clock=lambda: now[0],
    )
    engine.start()
    try:
        instance_id = engine.start_new("timer_then_activity", None, "3600")
        wait_until(lambda: "TimerCreated" in event_types(engine, instance_id))
        engine.suspend(instance_id, "hold")
        engine.wait_for_status(instance_id, ("Suspended",), 10)
        now[0] += timedelta(hours=2)  # the timer is due now

        def count(table: str) -> int:
            with engine._store.reading() as conn:  # never held while waiting: the scheduler needs it
                return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

        wait_until(lambda: count("work") == 0)  # the timer fired ...
        assert count("inbox") == 1  # ... and its TimerFired waits in the inbox
        assert "TimerFired" not in event_types(engine, instance_id)
        assert engine.get_status(instance_id)["runtimeStatus"] == "Suspended"
        engine.resume(instance_id, None)
        assert engine.wait_for_completion(instance_id, 10)["output"] == 10
        types = event_types(engine, instance_id)
        assert types.index("ExecutionSuspended") < types.index("ExecutionResumed") < types.index("TimerFired")
    finally:
        engine.close()


def test_sub_orchestration_with_retry_reruns_the_child_with_its_version(
    engine: DurableEngine, activity_log: Path
) -> None:
    status = run(engine, "sub_with_retry", {"key": "child-ok", "fail_times": 2, "attempts": 4})
    assert status["runtimeStatus"] == "Completed", status
    assert status["output"] == {"child": {"value": "child-ok ok after 3", "version": "2.5"}, "after": 42}
    assert activity_log.read_text().splitlines() == [f"flaky child-ok {i}" for i in (1, 2, 3)]
    types = event_types(engine, status["instanceId"])
    assert types.count("SubOrchestrationInstanceCreated") == 3
    assert types.count("SubOrchestrationInstanceFailed") == 2 and types.count("TimerFired") == 2
    children = [s for s in engine.list_instances() if s["name"] == "flaky_child"]
    assert sorted(c["runtimeStatus"] for c in children) == ["Completed", "Failed", "Failed"]
    assert {c["version"] for c in children} == {"2.5"}


def test_sub_orchestration_with_retry_exhausted_raises_in_the_parent(
    engine: DurableEngine, activity_log: Path
) -> None:
    status = run(engine, "sub_with_retry", {"key": "child-fails", "fail_times": 10, "attempts": 2})
    assert status["runtimeStatus"] == "Completed"
    assert "flaky child-fails attempt 2 failed" in status["output"]["error"]


def test_sub_orchestration_that_continues_as_new_reports_to_its_parent(engine: DurableEngine) -> None:
    assert run(engine, "parent_of_countdown", 2)["output"] == "lift-off"
