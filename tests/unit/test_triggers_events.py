"""The Event Grid trigger `job_events`, fed through the local host's real webhook with payloads shaped
like Azure's documented samples (Event Grid schema and CloudEvents 1.0) and malformed ones. The ML
platform is the in-memory adapter with event delivery switched off, so every event here is ours."""

from __future__ import annotations

import time
from typing import Any

from tests.integration.test_orchestration import _http, calls, host, memory, start, wait  # noqa: F401

WORKSPACE = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/"
    "Microsoft.MachineLearningServices/workspaces/ws"
)


def grid_event(
    job: str, status: str, tags: dict[str, str], event_type: str = "RunStatusChanged"
) -> dict[str, Any]:
    return {
        "id": f"id-{job}-{status}",
        "topic": WORKSPACE,
        "subject": f"experiments/e1/runs/{job}",
        "eventType": f"Microsoft.MachineLearningServices.{event_type}",
        "eventTime": "2026-11-24T23:00:00Z",
        "data": {
            "experimentId": "e1",
            "experimentName": "retrain-msft",
            "runId": job,
            "runType": "azureml.scriptrun",
            "runTags": tags,
            "runProperties": {},
            "runStatus": status,
        },
        "dataVersion": "2",
        "metadataVersion": "1",
    }


def cloud_event(job: str, tags: dict[str, str]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"ce-{job}",
        "source": WORKSPACE,
        "subject": f"experiments/e1/runs/{job}",
        "type": "Microsoft.MachineLearningServices.RunCompleted",
        "time": "2026-11-24T23:00:00Z",
        "data": {
            "experimentId": "e1",
            "experimentName": "retrain-msft",
            "runId": job,
            "runType": "azureml.scriptrun",
            "runTags": tags,
            "runProperties": {},
        },
    }


def deliver(host, payload: Any) -> int:  # noqa: F811
    code, _ = _http(
        "POST", host.event_grid_url("job_events"), payload, headers={"aeg-event-type": "Notification"}
    )
    return code


def begin_waiting(host, memory) -> tuple[str, str]:  # noqa: F811
    """A cycle whose job has finished but whose event was lost: it waits (1-minute poll) for ours."""
    memory.script.host_url = None
    code, answer = start(host)
    assert code == 202
    instance_id = answer["id"]
    job = f"{instance_id}-train"
    deadline = time.monotonic() + 20
    while not (job in memory.jobs and memory.jobs[job]["status"] == "Completed"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return instance_id, job


def test_cloud_event_run_completed_wakes_the_orchestration(host, memory):  # noqa: F811
    instance_id, job = begin_waiting(host, memory)
    assert 200 <= deliver(host, [cloud_event(job, {"orchestration_instance_id": instance_id})]) < 300
    status = wait(host, instance_id, timeout=30)
    assert status["runtime_status"] == "Completed" and status["ids"]["job_signal"] == "event"


def test_event_grid_status_changed_wakes_it_and_duplicates_are_harmless(host, memory):  # noqa: F811
    instance_id, job = begin_waiting(host, memory)
    tags = {"orchestration_instance_id": instance_id, "ticker": "MSFT"}
    # Not final yet: ignored; then the final status twice in one delivery.
    assert 200 <= deliver(host, [grid_event(job, "Running", tags)]) < 300
    time.sleep(0.5)
    assert wait_running(host, instance_id)
    assert (
        200 <= deliver(host, [grid_event(job, "Completed", tags), grid_event(job, "Completed", tags)]) < 300
    )
    assert wait(host, instance_id, timeout=30)["runtime_status"] == "Completed"
    # A late copy for a finished orchestration is acknowledged and ignored.
    assert 200 <= deliver(host, grid_event(job, "Completed", tags, "RunCompleted")) < 300
    assert calls(memory, "register_model") == ["1"]


def wait_running(host, instance_id: str) -> bool:  # noqa: F811
    code, status = _http("GET", f"{host.url}/api/retrain/{instance_id}?code={host.function_key}")
    return code == 200 and status["runtime_status"] == "Running" and status["step"] == "wait_for_job"


def test_events_that_are_not_ours_are_acknowledged_and_ignored(host, memory):  # noqa: F811
    instance_id, job = begin_waiting(host, memory)
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
    assert wait(host, instance_id, timeout=30)["runtime_status"] == "Completed"


def test_failed_run_event_fails_the_cycle(host, memory):  # noqa: F811
    memory.script.job_status = "Failed"
    instance_id, job = begin_waiting_failed(host, memory)
    assert 200 <= deliver(host, [grid_event(job, "failed", {"orchestration_instance_id": instance_id})]) < 300
    status = wait(host, instance_id, timeout=30)
    assert status["runtime_status"] == "Failed" and "ended Failed" in status["error"]
    assert memory.models == {}


def begin_waiting_failed(host, memory) -> tuple[str, str]:  # noqa: F811
    memory.script.host_url = None
    code, answer = start(host)
    assert code == 202
    job = f"{answer['id']}-train"
    deadline = time.monotonic() + 20  # the event is a hint: the platform must already say Failed
    while not (job in memory.jobs and memory.jobs[job]["status"] == "Failed"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return answer["id"], job
