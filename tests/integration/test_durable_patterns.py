"""The Durable Functions patterns of Microsoft's samples, on the local host, through the HTTP starter and the
management URLs `create_check_status_response` hands out (tests/durable_patterns_app is shaped like the
samples-v2 apps; test_samples_v2.py runs the real ones when a checkout is available)."""

from __future__ import annotations

import io
import json
import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from functions_host.functions import FunctionLoadError
from functions_host.host import HOST_URL_SETTING, LocalHost

APP_DIR = Path(__file__).resolve().parents[1] / "durable_patterns_app"
TIMEOUT = 10
WAIT_S = 30.0  # generous: the machine is shared


def wait_for(url: str, predicate, timeout: float = WAIT_S) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = requests.get(url, timeout=TIMEOUT).json()
        if predicate(body):
            return body
        assert time.monotonic() < deadline, f"not reached within {timeout} s: {body}"
        time.sleep(0.05)


def done(body: dict[str, Any]) -> bool:
    return body["runtimeStatus"] in ("Completed", "Failed", "Terminated")


@pytest.fixture(autouse=True)
def _restore_host_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOST_URL_SETTING, "x")
    monkeypatch.delenv(HOST_URL_SETTING)


def start_host(app_dir: Path, state_dir: Path) -> LocalHost:
    return LocalHost(app_dir, state_dir, timers=False, out=io.StringIO()).start()


@pytest.fixture
def host(tmp_path: Path) -> Iterator[LocalHost]:
    local = start_host(APP_DIR, tmp_path / "state")
    try:
        yield local
    finally:
        local.stop()


def start(host: LocalHost, name: str, body: Any = None, **params: str) -> dict[str, str]:
    response = requests.post(
        f"{host.url}/api/orchestrators/{name}",
        data=None if body is None else json.dumps(body),
        params=params,
        timeout=TIMEOUT,
    )
    assert response.status_code == 202, response.text
    return response.json()


def test_function_chaining_in_a_blueprint(host: LocalHost) -> None:
    payload = requests.get(f"{host.url}/api/startChaining", timeout=TIMEOUT).json()
    status = wait_for(payload["statusQueryGetUri"], done)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]


def test_fan_out_fan_in(host: LocalHost) -> None:
    status = wait_for(start(host, "fan_out_fan_in", 5)["statusQueryGetUri"], done)
    assert status["output"] == {"items": 5, "total": sum(len(f"file-{i}" * (i + 1)) for i in range(5))}


def test_human_interaction_event_wins_and_deadline_wins(host: LocalHost) -> None:
    approved = start(host, "approval", {"timeout_s": 60})
    wait_for(approved["statusQueryGetUri"], lambda b: b["customStatus"] == "waiting for approval")
    send = approved["sendEventPostUri"].replace("{eventName}", "Approval")
    assert requests.post(send, json="yes", timeout=TIMEOUT).status_code == 202
    assert wait_for(approved["statusQueryGetUri"], done)["output"] == {"approved": "yes"}

    late = start(host, "approval", {"timeout_s": 0.3})
    assert wait_for(late["statusQueryGetUri"], done)["output"] == {"approved": None, "reason": "timed out"}


def test_monitor_polls_with_durable_timers_until_done(host: LocalHost) -> None:
    job = {"name": f"job-{time.monotonic_ns()}", "done_after": 3, "interval_s": 0.1}
    status = wait_for(start(host, "monitor", job)["statusQueryGetUri"], done)
    assert status["output"] == {"job": job["name"], "checks": 3}


def test_sub_orchestration(host: LocalHost) -> None:
    status = wait_for(start(host, "orchestrator")["statusQueryGetUri"], done)
    assert status["output"] == "Hello Seattle"
    children = requests.get(
        f"{host.url}/runtime/webhooks/durabletask/instances",
        params={"code": host.system_key, "runtimeStatus": "Completed"},
        timeout=TIMEOUT,
    ).json()
    assert [c["name"] for c in children if c["name"] == "sub_orchestrator"] == ["sub_orchestrator"]


def continue_versioned(payload: dict[str, str]) -> dict[str, Any]:
    wait_for(payload["statusQueryGetUri"], lambda b: b["customStatus"] == "Waiting for Continue event...")
    send = payload["sendEventPostUri"].replace("{eventName}", "Continue")
    assert requests.post(send, json="go", timeout=TIMEOUT).status_code == 202
    return wait_for(payload["statusQueryGetUri"], done)


def test_versions_from_host_json_the_start_request_and_sub_orchestrations(host: LocalHost) -> None:
    default = start(host, "versioned")
    status = continue_versioned(default)
    assert status["version"] == "1.0"  # host.json's defaultVersion, recorded on the instance
    assert status["output"] == ["1.0", "0.9", "1.0", "Hello from A!"]
    history = requests.get(default["statusQueryGetUri"] + "&showHistory=true", timeout=TIMEOUT).json()
    started = [e for e in history["historyEvents"] if e["EventType"] == "ExecutionStarted"]
    assert [e["Version"] for e in started] == ["1.0"]

    explicit = start(host, "versioned", version="2.0")  # the SDK's start_new(..., version="2.0")
    status = continue_versioned(explicit)
    assert status["version"] == "2.0"
    assert status["output"] == ["2.0", "0.9", "1.0", "Hello from B!"]


def test_running_instance_keeps_its_version_when_default_version_changes(tmp_path: Path) -> None:
    """The versioning sample's README: start on 1.0, redeploy with defaultVersion 2.0, then continue."""
    app_dir = tmp_path / "app"
    shutil.copytree(APP_DIR, app_dir, ignore=shutil.ignore_patterns("__pycache__"))
    state = tmp_path / "state"
    first = start_host(app_dir, state)
    try:
        payload = start(first, "versioned")
        wait_for(payload["statusQueryGetUri"], lambda b: b["customStatus"] == "Waiting for Continue event...")
    finally:
        first.stop()
    config = json.loads((app_dir / "host.json").read_text())
    config["extensions"]["durableTask"]["defaultVersion"] = "2.0"
    (app_dir / "host.json").write_text(json.dumps(config))
    second = start_host(app_dir, state)
    try:
        base = f"{second.url}/runtime/webhooks/durabletask/instances/{payload['id']}"
        code = {"code": second.system_key}
        raised = requests.post(f"{base}/raiseEvent/Continue", json="go", params=code, timeout=TIMEOUT)
        assert raised.status_code == 202
        deadline = time.monotonic() + WAIT_S
        while not done(status := requests.get(base, params=code, timeout=TIMEOUT).json()):
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
    finally:
        second.stop()
    assert status["version"] == "1.0"
    # the instance keeps its old code path; the sub-orchestration created after the change gets 2.0
    assert status["output"] == ["1.0", "0.9", "2.0", "Hello from A!"]


def test_suspend_buffers_events_and_resume_continues(host: LocalHost) -> None:
    payload = start(host, "approval", {"timeout_s": 60})
    status_url = payload["statusQueryGetUri"]
    wait_for(status_url, lambda b: b["customStatus"] == "waiting for approval")
    suspend = payload["suspendPostUri"].replace("{text}", "maintenance")
    assert requests.post(suspend, timeout=TIMEOUT).status_code == 202
    suspended = wait_for(status_url, lambda b: b["runtimeStatus"] == "Suspended")
    assert requests.get(status_url, timeout=TIMEOUT).status_code == 202  # still in progress

    send = payload["sendEventPostUri"].replace("{eventName}", "Approval")
    assert requests.post(send, json="while suspended", timeout=TIMEOUT).status_code == 202
    time.sleep(1.0)  # give a (wrong) engine time to run the episode the event would trigger
    still = requests.get(status_url, timeout=TIMEOUT).json()
    assert still["runtimeStatus"] == "Suspended" and still["output"] is None
    assert still["lastUpdatedTime"] == suspended["lastUpdatedTime"]

    resume = payload["resumePostUri"].replace("{text}", "back")
    assert requests.post(resume, timeout=TIMEOUT).status_code == 202
    finished = wait_for(status_url, done)
    assert finished["runtimeStatus"] == "Completed" and finished["output"] == {"approved": "while suspended"}
    kinds = [
        (e["EventType"], e.get("Reason"))
        for e in requests.get(status_url + "&showHistory=true", timeout=TIMEOUT).json()["historyEvents"]
        if e["EventType"] in ("ExecutionSuspended", "ExecutionResumed")
    ]
    assert kinds == [("ExecutionSuspended", "maintenance"), ("ExecutionResumed", "back")]
    # a finished instance can be neither suspended nor resumed: 410, as the extension answers
    assert requests.post(suspend, timeout=TIMEOUT).status_code == 410
    assert requests.post(resume, timeout=TIMEOUT).status_code == 410


def test_terminate_a_suspended_instance(host: LocalHost) -> None:
    payload = start(host, "approval", {"timeout_s": 60})
    wait_for(payload["statusQueryGetUri"], lambda b: b["customStatus"] == "waiting for approval")
    requests.post(payload["suspendPostUri"].replace("{text}", "x"), timeout=TIMEOUT)
    wait_for(payload["statusQueryGetUri"], lambda b: b["runtimeStatus"] == "Suspended")
    assert (
        requests.post(payload["terminatePostUri"].replace("{text}", "stop"), timeout=TIMEOUT).status_code
        == 202
    )
    assert wait_for(payload["statusQueryGetUri"], done)["runtimeStatus"] == "Terminated"


def test_purge_removes_a_finished_instance_and_refuses_a_running_one(host: LocalHost) -> None:
    running = start(host, "approval", {"timeout_s": 60})
    wait_for(running["statusQueryGetUri"], lambda b: b["customStatus"] == "waiting for approval")
    refused = requests.delete(running["purgeHistoryDeleteUri"], timeout=TIMEOUT)
    # as the extension's HttpApiHandler: 412 Precondition Failed, the message as a JSON string
    assert refused.status_code == 412 and "has status Running" in refused.json()
    assert requests.get(running["statusQueryGetUri"], timeout=TIMEOUT).json()["runtimeStatus"] == "Running"

    finished = start(host, "orchestrator")
    wait_for(finished["statusQueryGetUri"], done)
    purged = requests.delete(finished["purgeHistoryDeleteUri"], timeout=TIMEOUT)
    assert purged.status_code == 200 and purged.json() == {"instancesDeleted": 1}
    assert requests.get(finished["statusQueryGetUri"], timeout=TIMEOUT).status_code == 404
    assert requests.delete(finished["purgeHistoryDeleteUri"], timeout=TIMEOUT).status_code == 404
    requests.post(running["terminatePostUri"].replace("{text}", "cleanup"), timeout=TIMEOUT)


def test_sdk_client_suspends_resumes_and_purges(host: LocalHost) -> None:
    payload = start(host, "approval", {"timeout_s": 60})
    wait_for(payload["statusQueryGetUri"], lambda b: b["customStatus"] == "waiting for approval")
    manage = f"{host.url}/api/manage/{payload['id']}"
    assert requests.post(f"{manage}/suspend", timeout=TIMEOUT).status_code == 200
    wait_for(payload["statusQueryGetUri"], lambda b: b["runtimeStatus"] == "Suspended")
    assert requests.post(f"{manage}/resume", timeout=TIMEOUT).status_code == 200
    wait_for(payload["statusQueryGetUri"], lambda b: b["runtimeStatus"] == "Running")
    requests.post(payload["sendEventPostUri"].replace("{eventName}", "Approval"), json="ok", timeout=TIMEOUT)
    wait_for(payload["statusQueryGetUri"], done)
    purged = requests.post(f"{manage}/purge", timeout=TIMEOUT)
    assert purged.status_code == 200 and purged.json() == {"instancesDeleted": 1}
    again = requests.post(f"{manage}/purge", timeout=TIMEOUT)  # the SDK reads our 404 as "0 deleted"
    assert again.status_code == 200 and again.json() == {"instancesDeleted": 0}


def test_host_json_that_is_not_json_is_refused_with_its_path(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    shutil.copytree(APP_DIR, app_dir, ignore=shutil.ignore_patterns("__pycache__"))
    good = (app_dir / "host.json").read_text()
    (app_dir / "host.json").write_text(good + good)  # two documents back to back, as one upstream sample has
    with pytest.raises(FunctionLoadError, match=f"{app_dir / 'host.json'}: not valid JSON"):
        start_host(app_dir, tmp_path / "state")
    # the state dir is free again: a fixed host.json starts
    (app_dir / "host.json").write_text(good)
    start_host(app_dir, tmp_path / "state").stop()


def test_sdk_client_lists_and_purges_by_creation_time_and_status(host: LocalHost) -> None:
    old = start(host, "orchestrator")
    wait_for(old["statusQueryGetUri"], done)
    time.sleep(1.1)  # the status shows whole seconds: a cutoff one second later splits old from recent
    since = requests.get(old["statusQueryGetUri"], timeout=TIMEOUT).json()["lastUpdatedTime"]
    cutoff = (datetime.fromisoformat(since.replace("Z", "+00:00")) + timedelta(seconds=1)).isoformat()
    recent = [start(host, "orchestrator") for _ in range(2)]
    for payload in recent:
        wait_for(payload["statusQueryGetUri"], done)
    live = start(host, "approval", {"timeout_s": 60})
    wait_for(live["statusQueryGetUri"], lambda b: b["customStatus"] == "waiting for approval")

    def listed() -> list[str]:
        return requests.get(f"{host.url}/api/history", params={"from": cutoff}, timeout=TIMEOUT).json()

    # Completed since the cutoff: the two recent ones (their sub-orchestrations too), not the old one
    before = listed()
    assert {p["id"] for p in recent} <= set(before) and old["id"] not in before
    assert len(before) == 4  # the two parents and their two sub-orchestrations
    purged = requests.delete(f"{host.url}/api/history", params={"from": cutoff}, timeout=TIMEOUT).json()
    assert purged == {"instancesDeleted": 4}
    assert listed() == []
    assert requests.get(old["statusQueryGetUri"], timeout=TIMEOUT).status_code == 200  # before the cutoff
    assert requests.get(live["statusQueryGetUri"], timeout=TIMEOUT).status_code == 202  # live: kept
    again = requests.delete(f"{host.url}/api/history", params={"from": cutoff}, timeout=TIMEOUT).json()
    assert again == {"instancesDeleted": 0}  # the SDK reads the host's 404 as nothing purged

    base = f"{host.url}/runtime/webhooks/durabletask/instances"
    code = {"code": host.system_key}
    no_from = requests.delete(base, params=code, timeout=TIMEOUT)
    assert no_from.status_code == 400 and "createdTimeFrom" in no_from.json()
    running = requests.delete(
        base, params={**code, "createdTimeFrom": cutoff, "runtimeStatus": "Running"}, timeout=TIMEOUT
    )
    assert running.status_code == 400 and "terminal" in running.json()["ExceptionMessage"]
    bad_time = requests.get(base, params={**code, "createdTimeFrom": "yesterday"}, timeout=TIMEOUT)
    assert bad_time.status_code == 400 and "ISO 8601" in bad_time.json()["ExceptionMessage"]
    requests.post(live["terminatePostUri"].replace("{text}", "cleanup"), timeout=TIMEOUT)
