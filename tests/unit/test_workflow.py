"""The orchestrator generator driven by a fake durable context, in the style of the Durable Functions
`samples-v2` tests: the context's `call_activity_with_retry`, `create_timer`, `wait_for_external_event`
and `task_any` return task objects, and the test sends their results into the generator.

The results come from `World`, a small scripted platform whose activities raise the port's exceptions;
they run through the real `activities.report_failures`, as they do when registered with the host. A
transient failure that reaches the orchestrator is thrown into the generator as Durable does once its
retries are spent. Timers fire at once and move the fake clock, so a day of polling runs in
milliseconds. The same paths through the real local host are in tests/integration/test_orchestration.py.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.durable_functions.models.history import HistoryEvent, HistoryEventType

from retrain.activities import report_failures
from retrain.ports import EndpointBusyError, PlatformError, TransientPlatformError
from retrain.workflow import JOB_FINISHED_EVENT, ROLLOUT_OUTCOME_EVENT, WorkflowFailed, retrain_orchestrator

INSTANCE = "retrain-msft-20260105t000000z"
JOB = f"{INSTANCE}-train"
START = datetime(2026, 1, 5, tzinfo=UTC)


# -- the fake context and its tasks ------------------------------------------------------------------
class FakeTask:
    def __init__(self) -> None:
        self.result: Any = None
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ActivityTask(FakeTask):
    def __init__(self, name: str, payload: dict[str, Any]):
        super().__init__()
        self.name, self.payload = name, payload


class TimerTask(FakeTask):
    def __init__(self, fire_at: datetime):
        super().__init__()
        self.fire_at = fire_at


class EventTask(FakeTask):
    def __init__(self, name: str):
        super().__init__()
        self.name = name


class AnyTask(FakeTask):
    def __init__(self, tasks: list[FakeTask]):
        super().__init__()
        self.tasks = tasks


class FakeContext:
    def __init__(self, cycle_input: dict[str, Any]):
        self.instance_id = INSTANCE
        self.current_utc_datetime = START
        self.custom_status: dict[str, Any] | None = None
        self._input = cycle_input
        self.histories: list[HistoryEvent] = []  # what the SDK replays; empty: a first execution

    def get_input(self) -> dict[str, Any]:
        return self._input

    def set_custom_status(self, status: dict[str, Any]) -> None:
        self.custom_status = copy.deepcopy(status)

    def call_activity_with_retry(self, name: str, retry: Any, payload: dict[str, Any]) -> ActivityTask:
        return ActivityTask(name, payload)

    def create_timer(self, fire_at: datetime) -> TimerTask:
        return TimerTask(fire_at)

    def wait_for_external_event(self, name: str) -> EventTask:
        return EventTask(name)

    def task_any(self, tasks: list[FakeTask]) -> AnyTask:
        return AnyTask(tasks)


# -- the scripted platform ---------------------------------------------------------------------------
@dataclass
class World:
    champion: dict[str, Any] | None = None
    job_statuses: list[str] = field(default_factory=lambda: ["Completed"])  # successive get_job_status
    events: list[dict[str, Any]] = field(default_factory=list)  # delivered at the next waits, in order
    metrics: dict[str, float] = field(default_factory=lambda: {"mae": 1.0, "naive_mae": 1.2})
    traffic: dict[str, int] = field(default_factory=dict)
    deployments: dict[str, str] = field(default_factory=dict)  # slot -> provisioning state
    broken: set[str] = field(default_factory=set)  # slots whose smoke test fails
    broken_live: bool = False  # the smoke test through the live URL (unpinned) fails
    traffic_reads: int = 0  # reads that still show a traffic update as Updating (old traffic)
    delete_lag: int = 1  # reads that still show a deleted deployment as it was (the delete not registered)
    delete_reads: int = 1  # reads that then show it as Deleting
    busy: dict[str, int] = field(default_factory=dict)  # activity -> refusals (409) left
    fail: dict[str, Exception] = field(default_factory=dict)  # activity -> exception it raises
    log: list[tuple[str, Any]] = field(default_factory=list)  # activities, timers and waits, in order
    earlier_cycle: str | None = None  # an earlier active cycle of the ticker (the guard activity's answer)
    _pending: dict[str, Any] | None = None
    _deleting: dict[str, list[str]] = field(default_factory=dict)  # slot -> states its next reads show

    def activity(self, name: str) -> Any:
        """The activity `name` as a plain function of its payload, as `activities.py` defines them."""

        def activity(payload: dict[str, Any]) -> Any:
            return self.run(name, payload)

        activity.__name__ = name
        return activity

    def run(self, name: str, payload: dict[str, Any]) -> Any:
        self.log.append((name, payload))
        if name in self.fail:
            raise self.fail[name]
        if self.busy.get(name):
            self.busy[name] -= 1
            raise EndpointBusyError("another operation is in progress (409 Conflict)")
        return getattr(self, name)(payload)

    # activities (their JSON shapes)
    def earlier_active_cycle(self, p: dict[str, Any]) -> str | None:
        return self.earlier_cycle

    def fetch_data(self, p: dict[str, Any]) -> dict[str, Any]:
        data = {"name": "msft-daily", "version": "abc123", "uri": "memory://d", "tags": {}}
        return {"data": data, "rows": 900, "recent_closes": [100.0] * 64}

    def get_champion(self, p: dict[str, Any]) -> dict[str, Any] | None:
        return self.champion

    def submit_training(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"job_name": p["job_name"], "code_version": "0.1.0+gtest"}

    def get_job_status(self, p: dict[str, Any]) -> dict[str, Any]:
        status = self.job_statuses.pop(0) if len(self.job_statuses) > 1 else self.job_statuses[0]
        return {"job_name": p["job_name"], "status": status, "error": "boom" if status == "Failed" else None}

    def get_job_metrics(self, p: dict[str, Any]) -> dict[str, float]:
        return dict(self.metrics)

    def get_job_test_errors(self, p: dict[str, Any]) -> dict[str, Any] | None:
        return None  # no per-day errors: the gate falls back to its fixed margin (tested in test_gate*)

    def register_model(self, p: dict[str, Any]) -> dict[str, Any]:
        version = "2" if self.champion else "1"
        return {"name": p["name"], "version": version, "tags": p["tags"]}

    def set_champion(self, p: dict[str, Any]) -> dict[str, Any]:
        return p["model"]

    def begin_create_endpoint(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"name": p["name"], "state": "Creating"}

    def get_endpoint(self, p: dict[str, Any]) -> dict[str, Any]:
        if self._pending is not None:
            if self._pending["reads"] > 0:
                self._pending["reads"] -= 1
                return {"name": p["name"], "state": "Updating", "traffic": dict(self.traffic)}
            self.traffic, self._pending = dict(self._pending["traffic"]), None
        return {
            "name": p["name"],
            "state": "Succeeded",
            "scoring_uri": "http://x/score",
            "traffic": self.traffic,
        }

    def begin_deployment(self, p: dict[str, Any]) -> dict[str, Any]:
        if self.deployments.get(p["slot"]) == "Failed":
            raise PlatformError(f"deployment {p['slot']} failed its first provisioning; delete it first")
        self.deployments[p["slot"]] = "Succeeded"
        return {"endpoint": p["endpoint"], "slot": p["slot"], "state": "Creating"}

    def get_deployment(self, p: dict[str, Any]) -> dict[str, Any]:
        slot = p["slot"]
        if slot in self._deleting:
            if self._deleting[slot]:
                return {"endpoint": p["endpoint"], "slot": slot, "state": self._deleting[slot].pop(0)}
            del self._deleting[slot]
            self.deployments.pop(slot, None)
        return {"endpoint": p["endpoint"], "slot": slot, "state": self.deployments.get(slot, "NotFound")}

    def set_traffic(self, p: dict[str, Any]) -> dict[str, Any]:
        self._pending = {"traffic": dict(p["traffic"]), "reads": self.traffic_reads}
        return {"name": p["endpoint"], "state": "Updating", "traffic": dict(p["traffic"])}

    def record_traffic(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"recorded": True}

    def begin_delete_deployment(self, p: dict[str, Any]) -> dict[str, Any]:
        before = self.deployments.get(p["slot"], "NotFound")
        self._deleting[p["slot"]] = [before] * self.delete_lag + ["Deleting"] * self.delete_reads
        return {"endpoint": p["endpoint"], "slot": p["slot"], "state": "Deleting"}

    def smoke_test(self, p: dict[str, Any]) -> dict[str, Any]:
        live = {s: pct for s, pct in self.traffic.items() if pct > 0}
        slot = p["slot"] or (max(live, key=lambda s: live[s]) if live else None)
        if slot is None:
            return {"ok": False, "reason": "scoring call failed: 404 no valid deployments to route to"}
        if p["slot"] is None and self.broken_live:
            return {"ok": False, "reason": "forecast 1e+09 is implausible next to the last close 100"}
        if slot in self.broken:
            return {"ok": False, "reason": "forecast nan is not a finite number"}
        return {"ok": True, "reason": "valid answer within the latency bound", "forecast": 100.1}

    # what the test reads
    def calls(self, name: str) -> list[Any]:
        return [payload for called, payload in self.log if called == name]

    def names(self) -> list[str]:
        return [called for called, _ in self.log]

    def traffic_asked(self) -> list[dict[str, Any]]:
        """The set_traffic calls' endpoint and traffic (their other fields are the ledger's)."""
        return [{"endpoint": p["endpoint"], "traffic": p["traffic"]} for p in self.calls("set_traffic")]


@dataclass
class Outcome:
    output: dict[str, Any] | None
    error: str | None
    status: dict[str, Any]
    elapsed: timedelta


def drive(
    world: World, history: list[HistoryEvent] | None = None, instance_id: str = INSTANCE, **cycle: Any
) -> Outcome:
    """Run the orchestrator to its end, answering every task it yields from `world`."""
    context = FakeContext({"ticker": "MSFT", "poll_minutes": 10, "canary_percent": 10, **cycle})
    context.instance_id = instance_id
    context.histories = history or []
    orchestrator = retrain_orchestrator(context)
    value: Any = None
    thrown: Exception | None = None
    for _ in range(10_000):
        try:
            task = orchestrator.throw(thrown) if thrown else orchestrator.send(value)
        except StopIteration as stop:
            return Outcome(
                stop.value, None, context.custom_status or {}, context.current_utc_datetime - START
            )
        except WorkflowFailed as failed:
            return Outcome(
                None, str(failed), context.custom_status or {}, context.current_utc_datetime - START
            )
        value, thrown = None, None
        if isinstance(task, ActivityTask):
            try:
                value = report_failures(world.activity(task.name))(task.payload)  # as registered
            except Exception as exc:  # what Durable hands the orchestrator once the retries are spent
                thrown = Exception(f"Activity function '{task.name}' failed: {exc} \n {type(exc).__name__}")
        elif isinstance(task, TimerTask):
            world.log.append(("timer", (task.fire_at - context.current_utc_datetime).total_seconds()))
            context.current_utc_datetime = task.fire_at
        elif isinstance(task, AnyTask):
            event, timer = task.tasks
            assert isinstance(event, EventTask) and event.name in (JOB_FINISHED_EVENT, ROLLOUT_OUTCOME_EVENT)
            assert isinstance(timer, TimerTask)
            if world.events:
                event.result = world.events.pop(0)
                world.log.append(("event", event.result))
                value = event
            else:
                world.log.append(("poll_timer", None))
                context.current_utc_datetime = timer.fire_at
                value = timer
        else:
            raise AssertionError(f"unexpected task {task!r}")
    raise AssertionError("the orchestrator did not finish in 10,000 tasks")


def completed_event(status: str = "Completed") -> dict[str, Any]:
    return {"job_name": JOB, "status": status, "error": None}


def serving_blue() -> World:
    """A champion serves from blue: the next model goes to green, with a canary."""
    champion = {"name": "msft-forecaster", "version": "1", "tags": {}}
    metrics = {"mae": 1.0, "naive_mae": 1.2, "champion_mae": 1.1}
    return World(champion=champion, metrics=metrics, traffic={"blue": 100}, deployments={"blue": "Succeeded"})


# -- the paths ---------------------------------------------------------------------------------------
def test_happy_path_first_model_waits_for_traffic_before_the_live_smoke_test():
    world = World(events=[completed_event()])
    out = drive(world)
    assert out.error is None, out.error
    assert out.output is not None and out.output["status"] == "deployed"
    assert {k: out.output[k] for k in ("slot", "old_slot", "model_version")} == {
        "slot": "blue",
        "old_slot": None,
        "model_version": "1",
    }
    assert set(out.output) >= {"instance_id", "ticker", "data_version", "job_name", "gate", "scoring_uri"}
    assert world.traffic == {"blue": 100}
    names = world.names()
    promote = names.index("set_traffic")
    live_smoke = len(names) - 1 - names[::-1].index("smoke_test")
    assert "get_endpoint" in names[promote:live_smoke]  # the live smoke test runs once traffic applied
    steps = [s["step"] for s in out.status["steps"]]
    assert steps == [
        "fetch_data",
        "get_champion",
        "submit_training",
        "wait_for_job",
        "gate",
        "register_model",
        "ensure_endpoint",
        "deploy",
        "smoke_test",
        "promote",
        "smoke_test_live",
        "set_champion",
    ]
    assert out.status["step"] == "deployed" and out.status["ids"]["job_signal"] == "event"
    assert set(out.status) >= {"instance_id", "ticker", "steps", "ids", "decision", "warnings", "seconds"}


def test_second_model_canary_promote_and_retire_waits_for_the_delete():
    world = serving_blue()
    world.events = [completed_event()]
    world.delete_reads = 3
    out = drive(world)
    assert out.error is None, out.error
    assert (out.output["slot"], out.output["old_slot"]) == ("green", "blue")
    assert world.traffic_asked() == [
        {"endpoint": "msft-forecast", "traffic": {"blue": 90, "green": 10}},
        {"endpoint": "msft-forecast", "traffic": {"green": 100, "blue": 0}},
    ]
    retire = world.names().index("begin_delete_deployment")
    assert (
        world.names()[retire:].count("get_deployment") == 5
    )  # Succeeded (not registered), Deleting x3, gone
    assert world.deployments == {"green": "Succeeded"}
    assert out.status["ids"]["retired"] == "blue deleted" and out.output["warnings"] == []


def test_lost_event_then_poll():
    world = World(job_statuses=["Running", "Running", "Completed"])
    out = drive(world, poll_minutes=10)
    assert out.error is None, out.error
    assert out.status["ids"]["job_signal"] == "poll"
    assert len(world.calls("get_job_status")) == 3 and out.elapsed >= timedelta(minutes=30)


def test_failed_job_registers_nothing():
    world = World(events=[completed_event("Failed")], job_statuses=["Failed"])
    out = drive(world)
    assert (
        out.error is not None and "ended Failed: boom" in out.error and "nothing was registered" in out.error
    )
    assert "register_model" not in world.names() and out.status["step"] == "failed"
    assert out.status["error"] == out.error


def test_gate_reject_registers_but_deploys_nothing():
    world = serving_blue()
    world.events = [completed_event()]
    world.metrics = {"mae": 5.0, "naive_mae": 1.2, "champion_mae": 1.1}
    out = drive(world)
    assert out.error is None and out.output["status"] == "rejected"
    assert out.output["gate"]["deploy"] is False and out.status["decision"]["deploy"] is False
    assert world.calls("register_model")[0]["tags"]["gate_decision"] == "reject"
    assert "begin_deployment" not in world.names() and "set_traffic" not in world.names()


def test_a_rejected_challenger_names_its_serving_target_not_the_tickers_own_endpoint():
    """On the shared layout the ticker is served by its group's endpoint: a rejected cycle says that one."""
    world = serving_blue()
    world.events = [completed_event()]
    world.metrics = {"mae": 5.0, "naive_mae": 1.2, "champion_mae": 1.1}
    out = drive(world, serving_target="fleet-models")
    assert out.output["status"] == "rejected" and out.output["endpoint"] == "fleet-models"
    assert "request_rollout" not in world.names()


def test_smoke_failure_rolls_back_and_waits_for_the_rollback():
    world = serving_blue()
    world.events = [completed_event()]
    world.broken = {"green"}
    world.traffic_reads = 1
    out = drive(world)
    assert out.error is not None and "smoke test on slot green" in out.error
    assert "traffic is back on blue" in out.error
    assert world.traffic_asked() == [{"endpoint": "msft-forecast", "traffic": {"blue": 100, "green": 0}}]
    rollback = world.names().index("set_traffic")
    assert world.names()[rollback + 1 :].count("get_endpoint") == 2  # Updating, then Succeeded
    assert world.traffic == {"blue": 100, "green": 0}
    assert "set_champion" not in world.names() and out.status["step"] == "failed"


def test_a_first_model_that_fails_its_live_smoke_test_leaves_nothing_serving():
    """No old slot to go back to: the rollback is {new: 0} (both adapters take it: no slot serves), waited
    for like every traffic change, and the cycle fails saying that nothing serves and why."""
    world = World(events=[completed_event()], broken_live=True, traffic_reads=1)
    out = drive(world)
    assert out.error is not None and "smoke test on slot endpoint" in out.error
    assert "nothing serves" in out.error and "404" in out.error
    assert world.traffic_asked() == [
        {"endpoint": "msft-forecast", "traffic": {"blue": 100}},
        {"endpoint": "msft-forecast", "traffic": {"blue": 0}},
    ]
    rollback = len(world.names()) - 1 - world.names()[::-1].index("set_traffic")
    assert world.names()[rollback + 1 :].count("get_endpoint") == 2  # Updating, then Succeeded
    assert world.traffic == {"blue": 0}
    assert "set_champion" not in world.names() and out.status["step"] == "failed"
    assert out.status["ids"]["traffic"] == {"blue": 0}


def test_job_timeout():
    world = World(job_statuses=["Running"])
    out = drive(world, poll_minutes=60, job_timeout_hours=3)
    assert out.error is not None and "did not finish within 3:00:00" in out.error
    assert len(world.calls("get_job_status")) == 3 and "register_model" not in world.names()


def test_busy_endpoint_waits_with_timers_then_succeeds():
    world = serving_blue()
    world.events = [completed_event()]
    world.busy = {"set_traffic": 2}  # the canary meets two 409s
    out = drive(world)
    assert out.error is None, out.error
    log = world.names()
    first = log.index("set_traffic")
    # refused, timer, look at the endpoint, refused again, a longer timer, look, then accepted
    assert log[first : first + 7] == [
        "set_traffic",
        "timer",
        "get_endpoint",
        "set_traffic",
        "timer",
        "get_endpoint",
        "set_traffic",
    ]
    timers = [s for name, s in world.log[first:] if name == "timer"]
    assert timers[:2] == [1.0, 2.0]  # capped exponential back-off, not three quick retries
    assert world.traffic == {"green": 100, "blue": 0}


def test_busy_endpoint_beyond_the_deploy_timeout_fails_clearly():
    world = World(events=[completed_event()], busy={"begin_deployment": 1000})
    out = drive(world, deploy_timeout_minutes=2)
    assert (
        out.error is not None and "stayed busy" in out.error and "RETRAIN_DEPLOY_TIMEOUT_MINUTES" in out.error
    )
    assert out.elapsed <= timedelta(minutes=3)


def test_failed_idle_slot_is_deleted_and_gone_before_deploying():
    world = serving_blue()
    world.events = [completed_event()]
    world.deployments["green"] = "Failed"
    world.delete_reads = 2
    out = drive(world)
    assert out.error is None, out.error
    log = world.names()
    delete, deploy = log.index("begin_delete_deployment"), log.index("begin_deployment")
    assert delete < deploy and world.calls("begin_delete_deployment")[0]["slot"] == "green"
    assert log[delete:deploy].count("get_deployment") == 4  # still Failed, Deleting x2, then NotFound
    assert out.status["ids"]["cleared"] == "green was Failed"


def test_traffic_update_that_stays_updating_for_a_few_polls():
    world = World(events=[completed_event()], traffic_reads=4)
    out = drive(world)
    assert out.error is None, out.error
    promote = world.names().index("set_traffic")
    after = world.log[promote + 1 :]
    assert [name for name, _ in after[:10]] == ["timer", "get_endpoint"] * 5
    assert [s for name, s in after[:10] if name == "timer"] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert world.names()[promote + 11] == "smoke_test"


def test_traffic_that_never_applies_fails_within_the_deploy_timeout():
    world = serving_blue()
    world.events = [completed_event()]
    world.traffic_reads = 10_000
    out = drive(world, deploy_timeout_minutes=5)
    assert out.error is not None and "still Updating" in out.error
    assert out.status["step"] == "failed"


def test_forged_failed_event_is_ignored_when_the_platform_disagrees():
    world = World(
        events=[completed_event("Failed"), completed_event("Completed")],
        job_statuses=["Running", "Completed"],
    )
    out = drive(world)
    assert out.error is None, out.error
    assert len(world.calls("get_job_status")) == 2  # each event was checked with the platform
    assert out.status["ids"]["job_status"] == "Completed" and out.output["status"] == "deployed"


def test_event_about_another_job_does_not_end_the_wait():
    world = World(events=[{"job_name": "someone-else", "status": "Failed"}], job_statuses=["Completed"])
    out = drive(world)
    assert out.error is None and out.status["ids"]["job_signal"] == "poll"


def test_permanent_failure_fails_at_once():
    world = World(events=[completed_event()], fail={"get_job_metrics": PlatformError("no run for that job")})
    out = drive(world)
    assert out.error == "get_job_metrics failed: no run for that job"
    assert len(world.calls("get_job_metrics")) == 1 and "register_model" not in world.names()


def test_transient_failure_raises_for_durable_to_retry():
    world = World(fail={"get_champion": TransientPlatformError("429 Too Many Requests")})
    with pytest.raises(TransientPlatformError):
        report_failures(world.activity("get_champion"))({"model_name": "msft-forecaster"})
    out = drive(world)  # once Durable's retries are spent, the cycle fails with the reason
    assert out.error is not None and "429 Too Many Requests" in out.error and out.status["step"] == "failed"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (PlatformError("model 3 is not registered"), "permanent"),
        (ValueError("bad payload"), "permanent"),
        (KeyError("slot"), "permanent"),
        (EndpointBusyError("409"), "busy"),
    ],
)
def test_failures_that_a_retry_would_not_fix_are_reported_not_raised(error, kind):
    def activity(payload: dict[str, Any]) -> dict[str, Any]:
        raise error

    result = report_failures(activity)({})
    assert (
        result["activity_error"]["kind"] == kind and result["activity_error"]["type"] == type(error).__name__
    )


class ConnectionError(OSError):  # noqa: A001 - named as requests' and curl_cffi's, which are not builtins
    pass


def _wrapped(error: Exception, cause: BaseException) -> Exception:
    try:
        raise error from cause
    except Exception as chained:  # noqa: BLE001
        return chained


@pytest.mark.parametrize(
    "error",
    [
        TransientPlatformError("503 Service Unavailable"),
        TimeoutError("read timed out"),
        _wrapped(ValueError("yfinance failed for MSFT"), ConnectionError("connection reset")),
        _wrapped(PlatformError("get job failed"), TimeoutError("timed out")),
    ],
)
def test_network_failures_raise_for_durable_to_retry(error):
    def activity(payload: dict[str, Any]) -> dict[str, Any]:
        raise error

    with pytest.raises(type(error)):
        report_failures(activity)({})


def test_rollback_never_targets_an_old_slot_that_is_not_live():
    world = serving_blue()
    world.events = [completed_event()]

    def dead_blue(p: dict[str, Any]) -> dict[str, Any]:
        state = "Failed" if p["slot"] == "blue" else World.get_deployment(world, p)["state"]
        return {"endpoint": p["endpoint"], "slot": p["slot"], "state": state}

    world.get_deployment = dead_blue  # type: ignore[method-assign]
    # the smoke test of green passes directly but fails through the endpoint during the canary

    def smoke(p: dict[str, Any]) -> dict[str, Any]:
        if p["slot"] is None:
            return {"ok": False, "reason": "502 from the endpoint"}
        return World.smoke_test(world, p)

    world.smoke_test = smoke  # type: ignore[method-assign]
    out = drive(world)
    assert out.error is not None and "old slot blue is Failed, not live" in out.error
    assert "stays {'blue': 90, 'green': 10}" in out.error
    assert world.traffic_asked() == [{"endpoint": "msft-forecast", "traffic": {"blue": 90, "green": 10}}]
    assert "set_champion" not in world.names()


def test_retire_failure_is_a_warning_not_a_rollback():
    world = serving_blue()
    world.events = [completed_event()]
    world.fail = {"begin_delete_deployment": PlatformError("deployment blue has traffic")}
    out = drive(world)
    assert out.error is None and out.output["status"] == "deployed"
    assert out.output["warnings"] == [
        "could not delete old slot blue: begin_delete_deployment failed: deployment blue has traffic"
    ]


def test_an_input_from_before_gate_policies_replays_the_superiority_gate():
    """An orchestration started by the previous code has no gate_policy fields: replayed, it must decide
    as it did (superiority), or the history would diverge; an input of today's code carries its policy."""
    import numpy as np

    rng = np.random.default_rng(11)
    actual = 100 + rng.normal(0, 1, 187).cumsum()
    naive = rng.normal(0, 1, 187)
    champion = naive * 0.98
    model = champion * rng.choice([0.7, 1.3], 187)  # as good as the champion, not significantly better
    errors = {
        "actual": actual.tolist(),
        "model": (actual + model).tolist(),
        "naive": (actual + naive).tolist(),
        "champion": (actual + champion).tolist(),
    }

    def scored_world() -> World:
        world = serving_blue()
        world.events = [completed_event()]
        world.metrics = {
            "mae": float(np.mean(np.abs(model))),
            "naive_mae": float(np.mean(np.abs(naive))),
            "champion_mae": float(np.mean(np.abs(champion))),
        }
        world.get_job_test_errors = lambda p: errors  # type: ignore[method-assign]
        return world

    old = drive(scored_world())  # drive's input has no gate_* fields, as the previous code's
    assert old.error is None and old.output["status"] == "rejected"
    assert any(r.startswith("champion check (superiority) failed") for r in old.output["gate"]["reasons"])
    new = drive(scored_world(), gate_policy="non-inferiority", gate_noninferiority_margin=0.01)
    assert new.error is None and new.output["status"] == "deployed", new.output["gate"]
    assert any(
        r.startswith("champion check (non-inferiority, margin 0.01) passed")
        for r in new.output["gate"]["reasons"]
    )


def _canary_fails_through_the_endpoint(world: World) -> None:
    """The new slot passes its direct smoke test, then the endpoint fails during the canary."""

    def smoke(p: dict[str, Any]) -> dict[str, Any]:
        if p["slot"] is None:
            return {"ok": False, "reason": "502 from the endpoint"}
        return World.smoke_test(world, p)

    world.smoke_test = smoke  # type: ignore[method-assign]


def test_rollback_waits_for_an_old_slot_that_is_restarting():
    """Both slots crashed during the canary: the platform restarts blue (Updating for a few reads). The
    rollback waits for it with durable timers and then moves all traffic back (issue 20, item 3)."""
    world = serving_blue()
    world.events = [completed_event()]
    _canary_fails_through_the_endpoint(world)
    restarting = {"reads": 4}

    def healing_blue(p: dict[str, Any]) -> dict[str, Any]:
        if p["slot"] == "blue" and "smoke_test" in world.names() and restarting["reads"] > 0:
            restarting["reads"] -= 1
            return {"endpoint": p["endpoint"], "slot": "blue", "state": "Updating"}
        return World.get_deployment(world, p)

    world.get_deployment = healing_blue  # type: ignore[method-assign]
    out = drive(world, rollback_waits_for_old_slot=True)
    assert out.error is not None and "traffic is back on blue" in out.error, out.error
    assert world.calls("set_traffic")[-1]["traffic"] == {"blue": 100, "green": 0}
    assert world.traffic == {"blue": 100, "green": 0}
    rollback = world.names().index("get_deployment", world.names().index("smoke_test"))
    assert world.names()[rollback:].count("timer") >= 4  # waited with durable timers, not a busy loop
    assert "set_champion" not in world.names()


def test_rollback_gives_up_on_a_restarting_old_slot_at_the_deploy_timeout_and_says_what_serves():
    world = serving_blue()
    world.events = [completed_event()]
    _canary_fails_through_the_endpoint(world)
    original_get_endpoint = world.get_endpoint

    def with_models(p: dict[str, Any]) -> dict[str, Any]:
        state = original_get_endpoint(p)
        models = {
            "blue": {"name": "msft-forecaster", "version": "1"},
            "green": {"name": "msft-forecaster", "version": "2"},
        }
        return {**state, "deployments": models}

    def never_back(p: dict[str, Any]) -> dict[str, Any]:
        if p["slot"] == "blue" and "smoke_test" in world.names():
            return {"endpoint": p["endpoint"], "slot": "blue", "state": "Updating"}
        return World.get_deployment(world, p)

    world.get_endpoint = with_models  # type: ignore[method-assign]
    world.get_deployment = never_back  # type: ignore[method-assign]
    out = drive(world, rollback_waits_for_old_slot=True, deploy_timeout_minutes=5)
    assert out.error is not None and "old slot blue is Updating, not live after waiting 0:05:00" in out.error
    assert "serving blue 90% (msft-forecaster:1), green 10% (msft-forecaster:2)" in out.error, out.error
    assert world.traffic_asked() == [{"endpoint": "msft-forecast", "traffic": {"blue": 90, "green": 10}}]


def test_an_older_input_does_not_wait_in_the_rollback():
    """An orchestration started by the previous code (no rollback_waits_for_old_slot) replays the same."""
    world = serving_blue()
    world.events = [completed_event()]
    _canary_fails_through_the_endpoint(world)

    def restarting_blue(p: dict[str, Any]) -> dict[str, Any]:
        if p["slot"] == "blue" and "smoke_test" in world.names():
            return {"endpoint": p["endpoint"], "slot": "blue", "state": "Updating"}
        return World.get_deployment(world, p)

    world.get_deployment = restarting_blue  # type: ignore[method-assign]
    out = drive(world)
    assert out.error is not None and "old slot blue is Updating, not live, so traffic" in out.error
    assert world.names()[-2:] == ["get_deployment", "get_endpoint"]  # no timer: gave up at once


def test_the_first_job_poll_comes_soon_then_backs_off_to_the_poll_interval():
    """A dead job runner sends no event: the first poll must come within seconds (issue 20, item 8)."""
    world = World(job_statuses=["Running", "Running", "Running", "Running", "Failed"])
    out = drive(world, poll_minutes=1, job_first_poll_seconds=15)
    assert out.error is not None and "ended Failed: boom" in out.error
    assert len(world.calls("get_job_status")) == 5
    assert out.elapsed == timedelta(seconds=15 + 30 + 60 + 60 + 60)


def test_from_settings_turns_on_the_early_poll_and_the_waiting_rollback():
    from retrain.workflow import JOB_FIRST_POLL_S, CycleInput

    cycle = CycleInput.from_settings("MSFT", "http", environ={})
    assert cycle.job_first_poll_seconds == JOB_FIRST_POLL_S and cycle.rollback_waits_for_old_slot
    assert cycle.record_traffic_when_applied
    older = CycleInput.from_dict({"ticker": "MSFT"})
    assert older.job_first_poll_seconds == 0 and not older.rollback_waits_for_old_slot
    assert not older.record_traffic_when_applied


def test_the_endpoint_is_named_from_the_input_and_the_orchestrator_reads_no_setting_for_it(monkeypatch):
    """The endpoint's name depends on settings (RETRAIN_ENDPOINT_SUFFIX, the workspace): `from_settings`
    puts the suffix in the input when the cycle starts, and the orchestrator names the endpoint from it
    even when the settings say otherwise by the time it replays. An input from older code (no
    `endpoint_suffix`) is resolved from the settings, as before."""
    from retrain.workflow import CycleInput

    cycle = CycleInput.from_settings("MSFT", "http", environ={"RETRAIN_ENDPOINT_SUFFIX": "abc123"})
    assert cycle.endpoint_suffix == "abc123"
    assert CycleInput.from_settings("MSFT", "http", environ={}).endpoint_suffix == ""  # local: none
    assert CycleInput.from_dict({"ticker": "MSFT"}).endpoint_suffix is None

    monkeypatch.setenv("RETRAIN_ENDPOINT_SUFFIX", "zz9")  # the app setting changed after the start
    world = World(events=[completed_event()])
    out = drive(world, endpoint_suffix=cycle.endpoint_suffix)
    assert out.error is None, out.error
    assert out.output["endpoint"] == "msft-forecast-abc123"
    named = {p["endpoint"] for _, p in world.log if isinstance(p, dict) and "slot" in p}
    assert named == {"msft-forecast-abc123"}
    assert {p["endpoint"] for p in world.calls("set_traffic")} == {"msft-forecast-abc123"}

    older = World(events=[completed_event()])
    assert drive(older).output["endpoint"] == "msft-forecast-zz9"  # replayed as the older code did


@pytest.mark.parametrize("suffix", ["UPPER", "abcdefg", "a-b", "../x", 7, True])
def test_an_input_with_a_bad_endpoint_suffix_fails_before_any_activity(suffix):
    world = World()
    outcome = drive(world, endpoint_suffix=suffix)
    assert outcome.error is not None and "endpoint_suffix=" in outcome.error, outcome.error
    assert "lower-case letters or digits" in outcome.error
    assert world.log == []


def test_the_ledger_records_a_traffic_change_once_it_has_applied_with_the_orchestration_id():
    """A traffic update is long-running: the served ledger's event is recorded after the wait (the endpoint
    `Succeeded` with that traffic), not when asked, and names this orchestration (Azure's deployment
    listing carries no model tags to infer it from). A change that never applies is not recorded."""
    world = serving_blue()
    world.events, world.traffic_reads, world.delete_reads = [completed_event()], 2, 1
    out = drive(world, record_traffic_when_applied=True)
    assert out.error is None, out.error
    asked = world.calls("set_traffic")
    assert all(p["record_when_applied"] and p["instance_id"] == INSTANCE for p in asked)
    records = world.calls("record_traffic")
    assert [r["traffic"] for r in records] == [p["traffic"] for p in asked]
    assert all(r["instance_id"] == INSTANCE for r in records)
    names = world.names()
    for start in (i for i, n in enumerate(names) if n == "set_traffic"):
        recorded = names.index("record_traffic", start)
        between = [n for n in names[start + 1 : recorded] if n != "timer"]
        assert between == ["get_endpoint"] * 3, names  # Updating twice, then Succeeded: then recorded
    assert world.calls("begin_deployment")[0]["instance_id"] == INSTANCE
    assert world.calls("begin_delete_deployment")[0]["instance_id"] == INSTANCE

    never = serving_blue()
    never.events, never.traffic_reads = [completed_event()], 10_000
    failed = drive(never, record_traffic_when_applied=True, deploy_timeout_minutes=1)
    assert failed.error is not None and "record_traffic" not in never.names()


def test_an_older_input_records_traffic_when_asked_as_before():
    world = serving_blue()
    world.events = [completed_event()]
    assert drive(world).error is None
    assert "record_traffic" not in world.names()
    assert not any(p.get("record_when_applied") for p in world.calls("set_traffic"))


# -- defence in depth: the orchestrator checks its own input and keeps one cycle per ticker -----------
@pytest.mark.parametrize(
    ("field_values", "named"),
    [
        ({"gate_alpha": 1.0}, "gate_alpha"),
        ({"canary_percent": 150}, "canary_percent"),
        ({"deploy_timeout_minutes": -1}, "deploy_timeout_minutes"),
        ({"job_timeout_hours": "24"}, "job_timeout_hours"),
        ({"ticker": "msft"}, "ticker"),
        ({"ticker": "../x"}, "ticker"),
        ({"trainer": "/tmp/evil"}, "unknown trainer"),
        ({"hyperparameters": {"alpha": "1; rm -rf /"}}, "alpha"),
        ({"hyperparameters": {"max_epochs": 100_000_000}}, "max_epochs"),  # the trainer's declared bound
        ({"source": "file:///etc/passwd"}, "source"),
        ({"force": "yes"}, "force"),
        ({"gate_policy": "always"}, "gate policy"),
        ({"champion_override": True}, "unknown cycle input field"),
    ],
)
def test_an_invalid_input_fails_the_cycle_before_any_activity(field_values, named):
    world = World()
    outcome = drive(world, **field_values)
    assert outcome.error is not None and outcome.error.startswith("invalid cycle input:"), outcome
    assert named in outcome.error
    assert world.log == []  # nothing scheduled: no data, no job, no endpoint touched
    assert outcome.status["step"] == "failed" and outcome.status["error"] == outcome.error


def test_a_cycle_beside_an_earlier_one_of_its_ticker_ends_without_touching_the_platform():
    world = World(earlier_cycle="retrain-msft-20260104t230000z")
    outcome = drive(world)
    assert outcome.error is not None
    assert "ticker MSFT is already being retrained by retrain-msft-20260104t230000z" in outcome.error
    assert [name for name, _ in world.log] == ["earlier_active_cycle"]
    assert world.log[0][1] == {"ticker": "MSFT", "instance_id": INSTANCE}


def test_the_guard_runs_first_and_then_the_cycle_as_before():
    world = World()
    outcome = drive(world)
    assert outcome.error is None and outcome.output["status"] == "deployed", outcome
    assert [name for name, _ in world.log][:2] == ["earlier_active_cycle", "fetch_data"]


def _scheduled(name: str) -> HistoryEvent:
    return HistoryEvent(
        EventType=HistoryEventType.TASK_SCHEDULED,
        EventId=0,
        IsPlayed=True,
        Timestamp="2026-01-05T00:00:00Z",
        Name=name,
    )


def test_a_replay_of_a_cycle_started_before_the_guard_does_what_it_did():
    # Its history's first activity is fetch_data: the replay must not schedule a new first activity
    # (Durable would find it missing from the history), so it runs as the previous code did.
    world = World(earlier_cycle="retrain-msft-20260104t230000z")
    outcome = drive(world, history=[_scheduled("fetch_data")])
    assert outcome.error is None and outcome.output["status"] == "deployed", outcome
    assert "earlier_active_cycle" not in [name for name, _ in world.log]
    # a replay of a guarded cycle keeps the guard
    world = World(earlier_cycle="retrain-msft-20260104t230000z")
    outcome = drive(world, history=[_scheduled("earlier_active_cycle")])
    assert outcome.error is not None and "already being retrained" in outcome.error


def test_the_edge_and_the_orchestrator_share_one_validation():
    from retrain.triggers import BadRequest, parse_retrain_request

    # a setting outside the rules is refused at the edge with the same message the orchestrator gives
    with pytest.raises(BadRequest, match="canary_percent=150"):
        parse_retrain_request(b'{"ticker": "MSFT"}', {"RETRAIN_CANARY_PERCENT": "150"})
    outcome = drive(World(), canary_percent=150)
    assert outcome.error is not None and "canary_percent=150" in outcome.error


def _names_used(world: World) -> dict[str, Any]:
    """Every name the orchestrator put into an activity's payload."""
    payloads = {name: payload for name, payload in reversed(world.log) if isinstance(payload, dict)}
    return {
        "asset": payloads["fetch_data"].get("asset_name"),
        "model": payloads["get_champion"]["model_name"],
        "job": payloads["submit_training"]["job_name"],
        "experiment": payloads["submit_training"]["experiment_name"],
        "registered": payloads["register_model"]["name"],
        "endpoint": payloads["begin_create_endpoint"]["name"],
    }


BRK_B = "retrain-brk.b-20260105t000000z"


def test_a_brk_b_cycle_started_before_naming_versions_replays_with_its_old_names():
    # An input without naming_version (the code before one-to-one names started it; its history has
    # activities) keeps the lossy names that code derived: BRK.B's then were BRK-B's.
    world = World(events=[completed_event()])
    out = drive(world, history=[_scheduled("earlier_active_cycle")], instance_id=BRK_B, ticker="BRK.B")
    assert out.error is None, out.error
    assert _names_used(world) == {
        "asset": None,  # fetch_data's payload as that code sent it: the activity names it the old way
        "model": "brk-b-forecaster",
        "job": "retrain-brk-b-20260105t000000z-train",
        "experiment": "retrain-brk-b",
        "registered": "brk-b-forecaster",
        "endpoint": "brk-b-forecast",
    }


def test_a_brk_b_cycle_with_the_naming_version_uses_the_one_to_one_names():
    world = World(events=[completed_event()])
    out = drive(world, instance_id=BRK_B, ticker="BRK.B", naming_version=2)
    assert out.error is None, out.error
    names = _names_used(world)
    assert names == {
        "asset": "brk-b--0907ab-daily",
        "model": "brk-b--0907ab-forecaster",
        "job": "retrain-brk-b-20260105t000000z-4c1a48-train",
        "experiment": "retrain-brk-b--0907ab",
        "registered": "brk-b--0907ab-forecaster",
        "endpoint": "brk-b--0907ab-forecast",
    }


def test_a_new_brk_b_cycle_without_the_naming_version_is_refused_before_any_effect():
    # A fresh start (through the Durable HTTP API) cannot pick the lossy names BRK-B's cycles use.
    world = World()
    out = drive(world, instance_id=BRK_B, ticker="BRK.B")
    assert out.error is not None and "naming_version" in out.error and world.log == []
    # MSFT's names are the same in both namings: nothing to refuse (and a start queued by older code runs)
    assert drive(World(events=[completed_event()])).error is None


def test_the_edge_sets_the_naming_version_and_the_orchestrator_checks_it():
    from retrain.triggers import parse_retrain_request

    assert parse_retrain_request(b'{"ticker": "BRK.B"}', {}).naming_version == 2
    out = drive(World(), naming_version=3)
    assert out.error is not None and "naming_version=3" in out.error
