"""Terminating a cycle cancels its training job (issue 20, item 5): a real cycle through the local host on
the local platform with the ridge trainer, terminated through `POST /api/retrain/{id}/terminate` while its
trainer runs. The job runner's process group (the runner and the trainer) must be gone and the job
Canceled; before, the job ran on after the orchestration was terminated."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from functions_host.host import LocalHost
from retrain import naming
from retrain.adapters import get_platform
from retrain.host_client import http_json, with_code
from retrain.local import jobs
from retrain.local.processes import process_alive, process_group_members, read_json
from tests.helpers import real_local_host, set_local_ridge_env, start, wait

pytestmark = pytest.mark.slow


@pytest.fixture
def local_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    set_local_ridge_env(monkeypatch, tmp_path)
    with real_local_host(tmp_path) as host:
        yield host


def _wait_until(what: str, probe, timeout: float):  # noqa: ANN001, ANN202 - a test helper
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        assert time.monotonic() < deadline, f"gave up waiting for {what} after {timeout:.0f} s"
        time.sleep(0.05)
    return found


def test_terminating_a_cycle_through_the_route_cancels_its_running_training_job(
    local_host: LocalHost, tmp_path: Path
) -> None:
    code, answer = start(local_host, {"ticker": "MSFT"})
    assert code == 202, answer
    instance_id = answer["id"]  # a fleet of one: its batch's job trains MSFT
    batch = naming.batch_instance_id(instance_id, 0)
    job_name = naming.job_name(batch)
    job_dir = tmp_path / "jobs" / job_name

    def trainer_pid() -> int | None:
        status_file = jobs.status_path(job_dir)
        return read_json(status_file).get("trainer_pid") if status_file.is_file() else None

    trainer = _wait_until("the trainer to start", trainer_pid, timeout=120)
    # Hold the real ridge trainer where it is (a stopped process does not finish, and SIGTERM does not
    # end it either): the job is still running when the terminate comes, however fast the fit is.
    os.kill(trainer, signal.SIGSTOP)
    runner = read_json(job_dir / "runner.json")
    assert process_group_members(runner["pid"]), "the runner's group should be running the trainer"

    terminate = with_code(answer["terminatePostUri"], local_host.function_key)
    code, body = http_json("POST", terminate)
    assert code == 202 and body["terminating"] is True, body
    assert body["batches"] == [
        {"batch": batch, "runtime_status": "Terminated", "job": {"name": job_name, "status": "Canceled"}}
    ], body

    # The runner's whole process group, the held trainer included, is gone (bounded wait, no fixed sleep).
    _wait_until(
        "the runner's process group to end",
        lambda: not process_group_members(runner["pid"]) and not process_alive(trainer),
        timeout=30,
    )
    assert not process_alive(runner["pid"], runner["start_ticks"])
    assert read_json(jobs.status_path(job_dir))["status"] == "Canceled"
    assert get_platform().get_job(job_name).status == "Canceled"
    assert wait(local_host, instance_id, timeout=60)["runtime_status"] == "Terminated"

    # A second cancel of the ended job is a no-op: it stays Canceled.
    again = get_platform().cancel_job(job_name)
    assert again is not None and again.status == "Canceled"
