"""A training job whose runner dies (issue 20, item 8): a real cycle through the local host on the local
platform with the ridge trainer; the runner process is killed by its PID while the job runs. It can send
no job-finished event, so the cycle must notice by polling soon (not after RETRAIN_JOB_POLL_MINUTES)
and fail with the platform's reason, and the ticker is free again."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from functions_host.host import LocalHost
from retrain import naming
from retrain.local import jobs
from retrain.local.processes import process_alive, read_json
from tests.helpers import outcome, real_local_host, set_local_ridge_env, start, wait

pytestmark = pytest.mark.slow


@pytest.fixture
def local_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    set_local_ridge_env(
        monkeypatch,
        tmp_path,
        # The default: a dead runner must not wait for it.
        RETRAIN_JOB_POLL_MINUTES="10",
    )
    with real_local_host(tmp_path) as host:
        yield host


def test_a_killed_job_runner_fails_the_cycle_within_a_minute_with_the_reason(
    local_host: LocalHost, tmp_path: Path
) -> None:
    code, answer = start(local_host, {"ticker": "MSFT"})
    assert code == 202, answer
    instance_id = answer["id"]
    job_dir = (
        tmp_path / "jobs" / naming.job_name(naming.batch_instance_id(instance_id, 0))
    )  # a fleet of one's
    deadline = time.monotonic() + 120
    while not (job_dir / "runner.json").is_file() or not jobs.status_path(job_dir).is_file():
        assert time.monotonic() < deadline, "the job runner never started"
        time.sleep(0.1)
    runner = read_json(job_dir / "runner.json")
    os.kill(runner["pid"], signal.SIGKILL)  # the runner dies; its trainer is orphaned
    killed = time.monotonic()
    while process_alive(runner["pid"], runner["start_ticks"]):
        time.sleep(0.05)
    status = wait(local_host, instance_id, timeout=120)
    noticed = time.monotonic() - killed
    msft = outcome(status)  # the fleet of one completes; its ticker failed, with the platform's reason
    assert status["runtime_status"] == "Completed" and msft["status"] == "failed", status
    assert f"the job runner {runner['pid']} is gone" in msft["error"], msft["error"]
    assert msft["model_version"] is None  # nothing was registered
    assert noticed < 60, noticed  # the poll interval is 10 minutes: only the early first poll gets here
    code, again = start(local_host, {"ticker": "MSFT"})  # the ticker is free again (not 409)
    assert code == 202, again
