"""The Event Grid trigger `job_events`, fed through the local host's real webhook with payloads shaped
like Azure's documented samples (Event Grid schema and CloudEvents 1.0) and malformed ones. The ML
platform is the in-memory adapter with event delivery switched off, so every event here is ours. The
cycles are fleets of one (what a `{"ticker"}` request starts): the job is the batch's, tagged with the
batch sub-orchestration's id, which its event wakes."""

from __future__ import annotations

import time

from retrain import naming
from tests.helpers import batch_status, calls, cloud_event, deliver, grid_event, outcome, start, wait


def begin_waiting(host, memory) -> tuple[str, str, str]:
    """A fleet of one whose job has finished but whose event was lost: its batch waits (1-minute poll)
    for ours. (the fleet's id, the batch's id, the job's name)"""
    memory.script.host_url = None
    code, answer = start(host)
    assert code == 202
    fleet_id = answer["id"]
    instance_id = naming.batch_instance_id(fleet_id, 0)
    job = naming.job_name(instance_id)
    deadline = time.monotonic() + 20
    # The job has finished and the orchestrator waits for its event (its status says so): the tests'
    # one-off "still waiting" checks after an event then see what the event did, whatever the load.
    while not (
        job in memory.jobs and memory.jobs[job]["status"] == "Completed" and wait_running(host, instance_id)
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return fleet_id, instance_id, job


def test_cloud_event_run_completed_wakes_the_orchestration(host, memory):
    fleet_id, instance_id, job = begin_waiting(host, memory)
    assert 200 <= deliver(host, [cloud_event(job, {"orchestration_instance_id": instance_id})]) < 300
    status = wait(host, fleet_id, timeout=30)
    assert outcome(status)["status"] == "deployed", status
    assert batch_status(host, fleet_id)["ids"]["job_signal"] == "event"


def test_event_grid_status_changed_wakes_it_and_duplicates_are_harmless(host, memory):
    fleet_id, instance_id, job = begin_waiting(host, memory)
    tags = {"orchestration_instance_id": instance_id, "ticker": "MSFT"}
    # Not final yet: ignored; then the final status twice in one delivery.
    assert 200 <= deliver(host, [grid_event(job, "Running", tags)]) < 300
    time.sleep(0.5)  # room for a wrong trigger to act on the non-final event
    assert wait_running(host, instance_id)
    assert (
        200 <= deliver(host, [grid_event(job, "Completed", tags), grid_event(job, "Completed", tags)]) < 300
    )
    assert outcome(wait(host, fleet_id, timeout=30))["status"] == "deployed"
    # A late copy for a finished orchestration is acknowledged and ignored.
    assert 200 <= deliver(host, grid_event(job, "Completed", tags, "RunCompleted")) < 300
    assert calls(memory, "register_batch_model") == [("MSFT", "1")]


def wait_running(host, instance_id: str) -> bool:
    """Whether the batch `instance_id` runs and waits for its job."""
    status = host.engine.get_status(instance_id, show_input=False) or {}
    step = (status.get("customStatus") or {}).get("step")
    return status.get("runtimeStatus") == "Running" and step == "wait_for_job"


def test_events_that_are_not_ours_are_acknowledged_and_ignored(host, memory):
    fleet_id, instance_id, job = begin_waiting(host, memory)
    others = [
        grid_event("someone-elses-job", "Completed", {}),  # no instance tag
        grid_event("x", "Failed", {"orchestration_instance_id": "retrain-msft-1999w01"}),  # unknown instance
        {
            **grid_event("y", "Completed", {}),
            "eventType": "Microsoft.MachineLearningServices.ModelRegistered",
        },
    ]
    assert 200 <= deliver(host, others) < 300
    for malformed in (
        {"no": "event"},
        [42],
        [grid_event("", "Completed", {"orchestration_instance_id": instance_id})],
    ):
        assert 200 <= deliver(host, malformed) < 500  # the host may refuse a non-event (400); never a 5xx
    time.sleep(1.0)
    assert wait_running(host, instance_id)  # still waiting for its own job
    # The job's own event still ends the wait.
    assert (
        200 <= deliver(host, [grid_event(job, "Completed", {"orchestration_instance_id": instance_id})]) < 300
    )
    assert outcome(wait(host, fleet_id, timeout=30))["status"] == "deployed"


def test_failed_run_event_fails_the_ticker(host, memory):
    memory.script.job_status = "Failed"
    fleet_id, instance_id, job = begin_waiting_failed(host, memory)
    assert 200 <= deliver(host, [grid_event(job, "failed", {"orchestration_instance_id": instance_id})]) < 300
    msft = outcome(wait(host, fleet_id, timeout=30))
    assert msft["status"] == "failed" and "ended Failed" in msft["error"], msft
    assert memory.models == {}


def begin_waiting_failed(host, memory) -> tuple[str, str, str]:
    memory.script.host_url = None
    code, answer = start(host)
    assert code == 202
    instance_id = naming.batch_instance_id(answer["id"], 0)
    job = naming.job_name(instance_id)
    deadline = time.monotonic() + 20  # the event is a hint: the platform must already say Failed
    while not (job in memory.jobs and memory.jobs[job]["status"] == "Failed"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return answer["id"], instance_id, job
