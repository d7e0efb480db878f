"""The job runner's event: its Azure ML / Event Grid shape, and delivery to a real HTTP receiver
on 127.0.0.1 standing in for the local host's Event Grid webhook (retries, no retry on 4xx)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from functions_host.keys import load_or_create_keys
from retrain.local import jobs
from retrain.local.processes import free_port

SPEC = {
    "job_name": "retrain-msft-2026w48-train",
    "experiment_name": "retrain-msft",
    "experiment_id": "3",
    "run_id": "0123abcd",
    "tags": {
        "orchestration_instance_id": "retrain-msft-2026w48",
        "ticker": "MSFT",
        "data_asset": "msft-daily",
        "data_version": "20260101-abc",
    },
}


def test_completed_job_event_is_an_azure_ml_run_completed_event() -> None:
    event = jobs.build_job_event(SPEC, succeeded=True, event_time="2026-11-24T01:02:03.000000Z")
    assert event["eventType"] == "Microsoft.MachineLearningServices.RunCompleted"
    assert event["subject"] == "experiments/3/runs/retrain-msft-2026w48-train"
    assert event["topic"].startswith("/subscriptions/")
    assert "/providers/Microsoft.MachineLearningServices/workspaces/" in event["topic"]
    assert event["dataVersion"] == "2" and event["metadataVersion"] == "1"
    assert event["eventTime"] == "2026-11-24T01:02:03.000000Z" and event["id"]
    data = event["data"]
    assert data["runId"] == SPEC["job_name"] and data["experimentName"] == "retrain-msft"
    assert data["experimentId"] == "3"
    assert data["runTags"] == SPEC["tags"]
    assert "runStatus" not in data
    json.dumps(event)  # plain JSON


def test_failed_job_event_is_run_status_changed_failed() -> None:
    event = jobs.build_job_event(SPEC, succeeded=False)
    assert event["eventType"] == "Microsoft.MachineLearningServices.RunStatusChanged"
    assert event["data"]["runStatus"] == "Failed"
    assert event["data"]["runTags"]["orchestration_instance_id"] == "retrain-msft-2026w48"
    assert jobs.build_job_event(SPEC, True)["id"] != jobs.build_job_event(SPEC, True)["id"]


def test_event_is_posted_as_an_event_grid_notification_with_retries(receiver_factory) -> None:
    receiver = receiver_factory([503, 500])
    event = jobs.build_job_event(SPEC, succeeded=True)
    url = jobs.webhook_url(receiver.url, "sys-key")
    delivered, detail = jobs.deliver_event(event, url, attempts=4, first_delay=0.01)
    assert delivered, detail
    assert len(receiver.requests) == 3
    last = receiver.requests[-1]
    query = parse_qs(urlparse(last["path"]).query)
    assert urlparse(last["path"]).path == "/runtime/webhooks/eventgrid"
    assert query == {"functionName": ["job_events"], "code": ["sys-key"]}
    assert last["headers"]["aeg-event-type"] == "Notification"
    assert last["body"] == [event]


def test_client_errors_are_not_retried_and_never_raise(receiver_factory) -> None:
    receiver = receiver_factory([401])
    delivered, detail = jobs.deliver_event(
        jobs.build_job_event(SPEC, True), receiver.url + "/x", first_delay=0.01
    )
    assert not delivered and "401" in detail and len(receiver.requests) == 1


def test_unreachable_host_is_reported_not_raised() -> None:
    url = f"http://127.0.0.1:{free_port()}/runtime/webhooks/eventgrid"
    delivered, detail = jobs.deliver_event(
        jobs.build_job_event(SPEC, True), url, attempts=2, first_delay=0.01
    )
    assert not delivered and "Connection" in detail


def test_event_key_is_the_event_grid_extension_key_or_the_master_setting(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("RETRAIN_SYSTEM_KEY", raising=False)
    monkeypatch.delenv("RETRAIN_FUNCTION_KEY", raising=False)
    assert jobs.read_event_key(tmp_path) is None
    assert not (tmp_path / "host").exists()  # reading never generates keys
    monkeypatch.setenv("RETRAIN_SYSTEM_KEY", "master-from-setting")
    assert jobs.read_event_key(tmp_path) == "master-from-setting"
    keys = load_or_create_keys(tmp_path, environ={})
    assert jobs.read_event_key(tmp_path) == keys.extension_key("eventgrid_extension") != keys.system_key


def test_backoff_gives_up_at_its_bound_and_on_a_client_error(tmp_path: Path, receiver_factory) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    seen: list[int] = []
    delivered, detail, attempts = jobs.deliver_with_backoff(
        jobs.build_job_event(SPEC, True),
        tmp_path,
        url,
        first_delay=0.05,
        max_delay=0.1,
        bound_s=0.6,
        on_attempt=lambda n, _: seen.append(n),
    )
    assert not delivered and "gave up" in detail and attempts >= 2 and seen == list(range(1, attempts + 1))
    receiver = receiver_factory([503, 403])
    delivered, detail, attempts = jobs.deliver_with_backoff(
        jobs.build_job_event(SPEC, True), tmp_path, receiver.url, first_delay=0.01, bound_s=30
    )
    assert not delivered and "403" in detail and attempts == 2


def test_status_transitions_keep_their_history(tmp_path: Path) -> None:
    jobs.update_status(tmp_path, "Queued")
    jobs.update_status(tmp_path, "Running", trainer_pid=1)
    final = jobs.update_status(tmp_path, "Failed", error="boom")
    assert [h["status"] for h in final["history"]] == ["Queued", "Running", "Failed"]
    assert json.loads((tmp_path / "status.json").read_text())["error"] == "boom"
    assert not list(tmp_path.glob(".*tmp"))


def test_a_runner_alive_but_without_a_heartbeat_is_reported_failed_with_the_reason(tmp_path: Path) -> None:
    """Issue 20, item 8: a runner whose process lives on but has stopped beating (stopped, or stuck on a
    dead disk) fails its job with the reason; a fresh heartbeat keeps the job Running."""
    import os
    import time

    from retrain.local.platform import LocalPlatform
    from retrain.local.processes import process_start_ticks, write_json_atomic

    platform = LocalPlatform(tmp_path)
    job_dir = tmp_path / "jobs" / "retrain-msft-beat-train"
    job_dir.mkdir(parents=True)
    write_json_atomic(job_dir / "job.json", {"job_name": job_dir.name})
    jobs.update_status(job_dir, "Running")
    me = {"pid": os.getpid(), "start_ticks": process_start_ticks(os.getpid())}  # a live process
    write_json_atomic(job_dir / "runner.json", me)
    jobs.heartbeat_path(job_dir).write_text("beat\n")
    assert platform.get_job(job_dir.name).status == "Running"
    stale = time.time() - jobs.HEARTBEAT_STALE_S - 30
    os.utime(jobs.heartbeat_path(job_dir), (stale, stale))
    status = platform.get_job(job_dir.name)
    assert status.status == "Failed", status
    assert f"the job runner {os.getpid()} has not written a heartbeat for 1" in (status.error or "")


def test_cancel_of_a_job_that_ended_or_was_never_submitted_is_a_no_op(tmp_path: Path) -> None:
    """Issue 20, item 5: only a running job is canceled; an ended one keeps its status and its runner
    (here this test's own process, which must survive) is never signalled."""
    import os

    from retrain.local.platform import LocalPlatform
    from retrain.local.processes import process_start_ticks, write_json_atomic

    platform = LocalPlatform(tmp_path)
    assert platform.cancel_job("retrain-msft-never-train") is None
    for ended in ("Completed", "Failed", "Canceled"):
        job_dir = tmp_path / "jobs" / f"retrain-msft-{ended.lower()}-train"
        job_dir.mkdir(parents=True)
        write_json_atomic(job_dir / "job.json", {"job_name": job_dir.name})
        me = {"pid": os.getpid(), "start_ticks": process_start_ticks(os.getpid())}
        write_json_atomic(job_dir / "runner.json", me)
        jobs.update_status(job_dir, ended, error=None if ended == "Completed" else "why")
        status = platform.cancel_job(job_dir.name)
        assert status is not None and status.status == ended, status
        assert jobs.read_json(jobs.status_path(job_dir))["status"] == ended
