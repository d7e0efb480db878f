"""A terminate that lands while a training job's submit is in flight still cancels the job (issue 20),
through the path a `{"ticker"}` request takes: a fleet of one, whose batch submits the job
(`submit_batch_training`) and whose terminate route terminates the batch and cancels its job.

Activities already scheduled run on after their orchestration is terminated, and the terminate route
cancels the job by its name: before, a terminate between the scheduling and the submit found no job, and
the job then ran to its end. The in-memory platform holds the submit at a gate while the test terminates
(no sleeps): the route reports no job, and the activity, once through, must find its cycle ended and
cancel the job it submitted."""

from __future__ import annotations

import threading
import time

from functions_host.host import LocalHost
from retrain import naming
from retrain.host_client import http_json, with_code
from tests.helpers import start, wait
from tests.integration.memory_platform import MemoryPlatform


def _until(what: str, probe, timeout: float = 20.0):  # noqa: ANN001, ANN202 - a test helper
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        assert time.monotonic() < deadline, f"gave up waiting for {what} after {timeout:.0f} s"
        time.sleep(0.05)
    return found


def test_a_terminate_during_the_submit_cancels_the_job_the_submit_then_creates(
    host: LocalHost, memory: MemoryPlatform
) -> None:
    gate = threading.Event()
    memory.script.submit_gate = gate
    memory.script.job_seconds = 120  # the job would run on for minutes: only a cancel ends it
    code, answer = start(host, {"ticker": "MSFT"})
    assert code == 202, answer
    instance_id = answer["id"]
    batch = naming.batch_instance_id(instance_id, 0)
    job_name = naming.job_name(batch)
    try:
        assert memory.script.submitting.wait(30), "the submit_batch_training activity never started"
        code, body = http_json("POST", with_code(answer["terminatePostUri"], host.function_key))
        assert code == 202, body
        # The route waited until the terminate was applied (the fleet's and its batch's), and there was
        # no job yet to cancel.
        assert body["runtime_status"] == "Terminated", body
        assert body["batches"] == [
            {"batch": batch, "runtime_status": "Terminated", "job": {"name": job_name, "status": None}}
        ], body
        assert job_name not in memory.jobs
    finally:
        gate.set()  # the activity goes on: it submits the job
    _until(
        "the submitted job to be canceled", lambda: memory.jobs.get(job_name, {}).get("status") == "Canceled"
    )
    assert [arg for call, arg in memory.calls if call == "cancel_job"] == [job_name, job_name]
    assert wait(host, instance_id, timeout=30)["runtime_status"] == "Terminated"
