"""The local Functions host's HTTP surface, exercised with a real HTTP client against a real LocalHost on
127.0.0.1: keys, HTTP trigger routing, the Event Grid webhook, the Durable Functions HTTP API (directly, and
through the real DurableOrchestrationClient inside trigger functions), timers, and the start-up listing."""

from __future__ import annotations

import io
import json
import os
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from functions_host.host import HOST_URL_SETTING, LocalHost
from functions_host.http import compile_route
from functions_host.keys import load_or_create_keys
from tests.helpers import HTTP_APP as APP
from tests.helpers import http_app_env, running_http_app

TIMEOUT = 10


def read_log(path: Path, kind: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [e for e in map(json.loads, path.read_text().splitlines()) if e["kind"] == kind]


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.fixture
def app_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return http_app_env(tmp_path, monkeypatch)


@pytest.fixture
def host(tmp_path: Path, app_env: Path) -> Iterator[LocalHost]:
    with running_http_app(tmp_path) as local:
        yield local


def fkey(host: LocalHost) -> dict[str, str]:
    return {"x-functions-key": host.function_key}


# --- start-up -------------------------------------------------------------------------------------------
def test_startup_lists_functions_with_urls_and_publishes_the_host_url(
    host: LocalHost, tmp_path: Path
) -> None:
    text = host.startup_output  # type: ignore[attr-defined]
    assert "Functions:\n\n" in text
    assert f"\tstart: [POST] {host.url}/api/orchestrators/{{function_name}}/{{instance_id?}}" in text
    assert f"\techo: [POST,PUT] {host.url}/api/echo" in text
    assert "\tjob_events: eventGridTrigger" in text and "\ttick: timerTrigger (*/2 * * * * * UTC)" in text
    assert host.url.startswith("http://127.0.0.1:") and os.environ[HOST_URL_SETTING] == host.url
    url = host.url
    host.stop()
    assert os.environ.get(HOST_URL_SETTING) != url
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=2)


# --- keys -------------------------------------------------------------------------------------------------
def test_keys_are_generated_once_private_and_stable(tmp_path: Path) -> None:
    first = load_or_create_keys(tmp_path, environ={})
    path = tmp_path / "host" / "keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_keys(tmp_path, environ={}) == first
    assert len(first.function_key) >= 40 and first.function_key != first.system_key
    overridden = load_or_create_keys(
        tmp_path, environ={"RETRAIN_FUNCTION_KEY": "fk", "RETRAIN_SYSTEM_KEY": "sk"}
    )
    assert (overridden.function_key, overridden.system_key) == ("fk", "sk")


def test_function_level_routes_need_a_valid_key(host: LocalHost) -> None:
    url = f"{host.url}/api/echo"
    assert requests.post(url, data=b"x", timeout=TIMEOUT).status_code == 401
    assert (
        requests.post(url, data=b"x", headers={"x-functions-key": "wrong"}, timeout=TIMEOUT).status_code
        == 401
    )
    assert requests.post(url, data=b"x", params={"code": "wrong"}, timeout=TIMEOUT).status_code == 401
    by_header = requests.post(url, data=b"hi", headers=fkey(host), timeout=TIMEOUT)
    assert (by_header.status_code, by_header.content) == (201, b"hi")
    assert by_header.headers["X-Echo-Method"] == "POST" and by_header.cookies["flavour"] == "ginger"
    by_query = requests.put(url, data=b"q", params={"code": host.function_key}, timeout=TIMEOUT)
    assert (by_query.status_code, by_query.content) == (201, b"q")
    assert requests.post(url, data=b"s", headers={"x-functions-key": host.system_key}, timeout=TIMEOUT).ok


def test_admin_routes_need_the_system_key(host: LocalHost) -> None:
    url = f"{host.url}/api/admin/ping"
    assert requests.get(url, headers=fkey(host), timeout=TIMEOUT).status_code == 401
    answer = requests.get(url, params={"code": host.system_key}, timeout=TIMEOUT)
    assert answer.status_code == 200 and answer.json() == {"pong": True}


def test_keys_from_settings_are_used(tmp_path: Path, app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRAIN_FUNCTION_KEY", "my-function-key")
    monkeypatch.setenv("RETRAIN_SYSTEM_KEY", "my-system-key")
    with LocalHost(APP, tmp_path / "state", out=io.StringIO(), timers=False) as local:
        assert (local.function_key, local.system_key) == ("my-function-key", "my-system-key")
        ok = requests.post(
            f"{local.url}/api/echo",
            data=b"k",
            headers={"x-functions-key": "my-function-key"},
            timeout=TIMEOUT,
        )
        assert ok.status_code == 201
    stored = json.loads((tmp_path / "state" / "host" / "keys.json").read_text())
    assert set(stored) == {"systemKeys"}  # only the extension keys: the settings' keys are not written


# --- routing ----------------------------------------------------------------------------------------------
def test_route_parameters_constraints_and_methods(host: LocalHost) -> None:
    item = requests.get(f"{host.url}/api/items/42/blue", params={"q": "1"}, timeout=TIMEOUT)
    assert item.status_code == 200  # anonymous: no key needed
    assert item.json() == {"route_params": {"item_id": "42", "label": "blue"}, "query": {"q": "1"}}
    assert requests.get(f"{host.url}/api/items/7", timeout=TIMEOUT).json()["route_params"] == {"item_id": "7"}
    assert requests.get(f"{host.url}/api/items/abc", timeout=TIMEOUT).status_code == 404  # {item_id:int}
    # a known route with another method: Azure's router answers 404 (azure-functions-host#10098)
    assert requests.post(f"{host.url}/api/items/7", timeout=TIMEOUT).status_code == 404
    assert requests.get(f"{host.url}/api/nowhere", timeout=TIMEOUT).status_code == 404
    assert requests.get(f"{host.url}/api/plain", params={"name": "ada"}, timeout=TIMEOUT).text == "hello ada"
    failed = requests.get(f"{host.url}/api/boom", timeout=TIMEOUT)
    assert failed.status_code == 500 and "the boom function always fails" in failed.text


def test_route_templates_compile_like_the_host() -> None:
    route = compile_route("orders/{id:int:min(10)}/{*rest}")
    assert route.match("/api/orders/12/a/b") == {"id": "12", "rest": "a/b"}
    assert route.match("/api/orders/9/a") is None and route.match("/api/orders/x") is None
    assert compile_route("files/{name:alpha?}").match("/API/Files") == {}
    assert compile_route("r/{v:regex(^a+$)}").match("/api/r/aaa") == {"v": "aaa"}
    with pytest.raises(ValueError, match="unknown constraint 'nope'"):
        compile_route("x/{v:nope}")


# --- Event Grid ---------------------------------------------------------------------------------------------
def eg_url(host: LocalHost, code: str | None = None, function: str = "job_events") -> str:
    return f"{host.url}/runtime/webhooks/eventgrid?functionName={function}&code={code or host.system_key}"


def eg_event(i: int, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": f"e{i}",
        "topic": "/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w",
        "subject": f"experiments/x/runs/run{i}",
        "eventType": "Microsoft.MachineLearningServices.RunCompleted",
        "eventTime": "2024-05-01T12:00:00Z",
        "data": data or {"runId": f"run{i}", "runStatus": "Completed"},
        "dataVersion": "2",
        "metadataVersion": "1",
    }


def test_event_grid_subscription_validation_handshake(host: LocalHost) -> None:
    body = [
        {
            "id": "v",
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "subject": "",
            "eventTime": "2024-05-01T12:00:00Z",
            "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"},
            "dataVersion": "2",
        }
    ]
    headers = {"aeg-event-type": "SubscriptionValidation"}
    answer = requests.post(eg_url(host), json=body, headers=headers, timeout=TIMEOUT)
    assert answer.status_code == 200
    assert answer.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    bad = requests.post(eg_url(host), json=[{"data": {}}], headers=headers, timeout=TIMEOUT)
    assert bad.status_code == 400 and "validationCode" in bad.text


def test_event_grid_webhook_needs_the_system_key_and_a_known_function(host: LocalHost) -> None:
    headers = {"aeg-event-type": "Notification"}
    assert (
        requests.post(
            eg_url(host, code=host.function_key), json=[eg_event(1)], headers=headers, timeout=TIMEOUT
        ).status_code
        == 401
    )
    missing = requests.post(
        eg_url(host, function="nope"), json=[eg_event(1)], headers=headers, timeout=TIMEOUT
    )
    assert missing.status_code == 404 and "cannot find function: 'nope'" in missing.text
    assert (
        requests.post(
            eg_url(host, function="echo"), json=[eg_event(1)], headers=headers, timeout=TIMEOUT
        ).status_code
        == 404
    )  # not an Event Grid trigger


def test_event_grid_schema_notification_invokes_once_per_event(host: LocalHost, app_env: Path) -> None:
    answer = requests.post(
        eg_url(host),
        json=[eg_event(1), eg_event(2)],
        headers={"aeg-event-type": "Notification"},
        timeout=TIMEOUT,
    )
    assert answer.status_code == 202
    events = read_log(app_env, "event")
    assert [(e["cls"], e["id"], e["subject"]) for e in events] == [
        ("EventGridEvent", "e1", "experiments/x/runs/run1"),
        ("EventGridEvent", "e2", "experiments/x/runs/run2"),
    ]
    assert events[0]["type"] == "Microsoft.MachineLearningServices.RunCompleted"
    assert events[1]["data"] == {"runId": "run2", "runStatus": "Completed"}


def test_cloud_events_single_batch_and_binary(host: LocalHost, app_env: Path) -> None:
    def cloud_event(i: int) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": f"c{i}",
            "source": "/azureml/w",
            "subject": f"runs/r{i}",
            "type": "Microsoft.MachineLearningServices.RunStatusChanged",
            "time": "2024-05-01T12:00:00Z",
            "data": {"runStatus": "Failed", "n": i},
        }

    single = requests.post(
        eg_url(host),
        data=json.dumps(cloud_event(1)),
        timeout=TIMEOUT,
        headers={"aeg-event-type": "Notification", "Content-Type": "application/cloudevents+json"},
    )
    assert single.status_code == 202
    batch = requests.post(
        eg_url(host),
        data=json.dumps([cloud_event(2), cloud_event(3)]),
        timeout=TIMEOUT,
        headers={"Content-Type": "application/cloudevents-batch+json"},
    )
    assert batch.status_code == 202
    binary = requests.post(
        eg_url(host),
        json={"runStatus": "Completed", "n": 4},
        timeout=TIMEOUT,
        headers={
            "ce-specversion": "1.0",
            "ce-id": "c4",
            "ce-source": "/azureml/w",
            "ce-type": "Custom.Type",
            "ce-subject": "runs/r4",
        },
    )
    assert binary.status_code == 202
    events = read_log(app_env, "event")
    assert [(e["cls"], e["id"]) for e in events] == [("CloudEvent", f"c{i}") for i in range(1, 5)]
    assert events[2]["data"] == {"runStatus": "Failed", "n": 3} and events[3]["subject"] == "runs/r4"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "the body is not JSON"),
        (b"42", "non-empty JSON array"),
        (b"[]", "non-empty JSON array"),
        (b'[{"id": "x"}]', "lacks subject, eventType, eventTime, data"),
        (b'{"specversion": "1.0", "id": "x"}', "lacks source, type"),
    ],
)
def test_malformed_event_grid_bodies_get_400(
    host: LocalHost, app_env: Path, body: bytes, message: str
) -> None:
    answer = requests.post(
        eg_url(host), data=body, headers={"aeg-event-type": "Notification"}, timeout=TIMEOUT
    )
    assert answer.status_code == 400 and message in answer.text
    assert read_log(app_env, "event") == []
    assert requests.get(f"{host.url}/api/plain", timeout=TIMEOUT).status_code == 200  # the host lives on


# --- Durable Functions HTTP API ---------------------------------------------------------------------------
def start_wait_for_job(
    host: LocalHost, timeout_s: int = 60, instance_id: str | None = None
) -> dict[str, str]:
    url = f"{host.url}/api/orchestrators/wait_for_job" + (f"/{instance_id}" if instance_id else "")
    answer = requests.post(url, json={"timeout_s": timeout_s}, headers=fkey(host), timeout=TIMEOUT)
    assert answer.status_code == 202, answer.text
    payload = answer.json()
    assert answer.headers["Location"] == payload["statusQueryGetUri"]
    return payload


def wait_for_status(url: str, expected: int = 200) -> requests.Response:
    return wait_until(lambda: (r := requests.get(url, timeout=TIMEOUT)).status_code == expected and r)


def test_check_status_urls_from_the_sdk_work_to_completion(host: LocalHost) -> None:
    payload = start_wait_for_job(host, instance_id="job-1")
    assert payload["id"] == "job-1"
    assert payload["statusQueryGetUri"].startswith(
        f"{host.url}/runtime/webhooks/durabletask/instances/job-1?"
    )
    assert (
        "taskHub=HttpAppHub" in payload["statusQueryGetUri"]
        and f"code={host.durable_key}" in payload["statusQueryGetUri"]
    )

    running = wait_until(
        lambda: (
            (r := requests.get(payload["statusQueryGetUri"], timeout=TIMEOUT)).json()["customStatus"] and r
        )
    )
    assert running.status_code == 202 and running.json()["runtimeStatus"] == "Running"
    assert running.headers["Location"].startswith(payload["statusQueryGetUri"].split("?")[0])

    send = payload["sendEventPostUri"].replace("{eventName}", "job_finished")
    assert requests.post(send, json={"status": "done"}, timeout=TIMEOUT).status_code == 202
    done = wait_for_status(payload["statusQueryGetUri"])
    body = done.json()
    assert body["runtimeStatus"] == "Completed" and body["input"] == {"timeout_s": 60}
    assert body["output"] == {"outcome": "event", "event": {"status": "done"}, "shouted": "DONE"}
    assert "historyEvents" not in body

    detail = requests.get(
        payload["statusQueryGetUri"] + "&showHistory=true&showHistoryOutput=true&showInput=false",
        timeout=TIMEOUT,
    ).json()
    kinds = [e["EventType"] for e in detail["historyEvents"]]
    assert "ExecutionStarted" in kinds and "EventRaised" in kinds and "ExecutionCompleted" in kinds
    assert detail["input"] is None
    # a finished instance: events and terminate are refused with 410, as in Azure
    assert requests.post(send, json={}, timeout=TIMEOUT).status_code == 410
    terminate = payload["terminatePostUri"].replace("{text}", "late")
    assert requests.post(terminate, timeout=TIMEOUT).status_code == 410
    # starting the same id again while the old one is finished replaces it; a running one conflicts
    again = start_wait_for_job(host, instance_id="job-1")
    conflict = requests.post(
        f"{host.url}/api/orchestrators/wait_for_job/job-1", json={}, headers=fkey(host), timeout=TIMEOUT
    )
    assert (
        conflict.status_code == 500 and "already" in conflict.text
    )  # the SDK raises on 409 inside the starter
    requests.post(again["terminatePostUri"].replace("{text}", "cleanup"), timeout=TIMEOUT)


def test_terminate_and_unknown_instances(host: LocalHost) -> None:
    payload = start_wait_for_job(host)
    terminate = payload["terminatePostUri"].replace("{text}", "no%20longer%20needed")
    assert requests.post(terminate, timeout=TIMEOUT).status_code == 202
    done = wait_for_status(payload["statusQueryGetUri"])
    assert done.json()["runtimeStatus"] == "Terminated"
    history = requests.get(
        payload["statusQueryGetUri"] + "&showHistory=true&showHistoryOutput=true", timeout=TIMEOUT
    ).json()["historyEvents"]
    # DTFx keeps the terminate reason as the ExecutionTerminated event's Input
    assert [e.get("Input") for e in history if e["EventType"] == "ExecutionTerminated"] == [
        "no longer needed"
    ]

    base = f"{host.url}/runtime/webhooks/durabletask/instances"
    code = {"code": host.system_key}
    assert requests.get(f"{base}/nope", params=code, timeout=TIMEOUT).status_code == 404
    assert (
        requests.post(f"{base}/nope/raiseEvent/x", json={}, params=code, timeout=TIMEOUT).status_code == 404
    )
    assert requests.post(f"{base}/nope/terminate", params=code, timeout=TIMEOUT).status_code == 404
    listed = requests.get(base, params={**code, "runtimeStatus": "Terminated"}, timeout=TIMEOUT).json()
    assert [i["instanceId"] for i in listed] == [payload["id"]]


def test_durable_webhooks_need_the_system_key(host: LocalHost) -> None:
    payload = start_wait_for_job(host)
    bare = payload["statusQueryGetUri"].split("?")[0]
    assert requests.get(bare, timeout=TIMEOUT).status_code == 401
    assert requests.get(bare, headers=fkey(host), timeout=TIMEOUT).status_code == 401
    assert (
        requests.get(bare, headers={"x-functions-key": host.system_key}, timeout=TIMEOUT).status_code == 202
    )
    start = f"{host.url}/runtime/webhooks/durabletask/orchestrators/wait_for_job"
    assert requests.post(start, json={}, timeout=TIMEOUT).status_code == 401
    unknown = requests.post(
        f"{host.url}/runtime/webhooks/durabletask/orchestrators/nope",
        json={},
        params={"code": host.system_key},
        timeout=TIMEOUT,
    )
    assert unknown.status_code == 400 and "nope" in unknown.json()["ExceptionMessage"]
    not_json = requests.post(
        payload["sendEventPostUri"].replace("{eventName}", "job_finished"),
        data="x",
        headers={"Content-Type": "text/plain"},
        timeout=TIMEOUT,
    )
    assert not_json.status_code == 400 and "application/json" in not_json.text
    requests.post(payload["terminatePostUri"].replace("{text}", "cleanup"), timeout=TIMEOUT)


def test_sdk_client_status_raise_event_and_terminate_inside_functions(host: LocalHost) -> None:
    first = start_wait_for_job(host)
    status_url = f"{host.url}/api/status/{first['id']}"
    seen = wait_until(
        lambda: (
            (r := requests.get(status_url, headers=fkey(host), timeout=TIMEOUT).json())["customStatus"] and r
        )
    )
    assert seen["runtimeStatus"] == "Running" and seen["input"] == {"timeout_s": 60}
    raised = requests.post(
        f"{host.url}/api/events/{first['id']}/job_finished",
        json={"status": "via sdk"},
        headers=fkey(host),
        timeout=TIMEOUT,
    )
    assert raised.status_code == 202
    done = wait_until(
        lambda: (
            (r := requests.get(status_url, headers=fkey(host), timeout=TIMEOUT).json())["runtimeStatus"]
            == "Completed"
            and r
        )
    )
    assert done["output"]["shouted"] == "VIA SDK"

    second = start_wait_for_job(host)
    stopped = requests.post(
        f"{host.url}/api/terminate/{second['id']}",
        params={"reason": "enough"},
        headers=fkey(host),
        timeout=TIMEOUT,
    )
    assert stopped.status_code == 202
    assert wait_for_status(second["statusQueryGetUri"]).json()["runtimeStatus"] == "Terminated"


def test_event_grid_event_completes_a_waiting_orchestration(host: LocalHost, app_env: Path) -> None:
    payload = start_wait_for_job(host)
    wait_until(lambda: requests.get(payload["statusQueryGetUri"], timeout=TIMEOUT).json()["customStatus"])
    event = eg_event(9, {"instanceId": payload["id"], "status": "completed", "runId": "run9"})
    answer = requests.post(
        eg_url(host), json=[event], headers={"aeg-event-type": "Notification"}, timeout=TIMEOUT
    )
    assert answer.status_code == 202
    done = wait_for_status(payload["statusQueryGetUri"]).json()
    assert done["output"]["outcome"] == "event" and done["output"]["shouted"] == "COMPLETED"


def test_timer_races_and_wins_when_no_event_comes(host: LocalHost) -> None:
    payload = start_wait_for_job(host, timeout_s=1)
    assert wait_for_status(payload["statusQueryGetUri"]).json()["output"] == {"outcome": "timeout"}


# --- timers -----------------------------------------------------------------------------------------------
def test_timer_runs_on_startup_then_on_its_schedule(host: LocalHost, app_env: Path) -> None:
    ticks = wait_until(lambda: (t := read_log(app_env, "timer")) and len(t) >= 2 and t, timeout=8)
    assert ticks[0]["past_due"] is False  # run_on_startup on a fresh state dir
    second = datetime.fromisoformat(ticks[1]["schedule_status"]["LastUpdated"])
    assert second.second % 2 == 0  # "*/2 * * * * *": even seconds, UTC
    assert datetime.fromisoformat(ticks[1]["schedule_status"]["Next"]).second % 2 == 0


def test_a_timer_function_runs_now_through_the_admin_route_with_the_master_key(
    host: LocalHost, app_env: Path
) -> None:
    """Azure's "manually run a non HTTP-triggered function": POST /admin/functions/{name} {"input": ""}
    with the master key, 202 at once; the run is out of schedule (not past due, no schedule status)."""
    url = f"{host.url}/admin/functions/tick"
    assert requests.post(url, json={"input": ""}, headers=fkey(host), timeout=TIMEOUT).status_code == 401
    master = {"x-functions-key": host.system_key}
    wait_until(lambda: read_log(app_env, "timer"), timeout=8)  # its run on start-up, first
    before = len(read_log(app_env, "timer"))
    answer = requests.post(url, json={"input": ""}, headers=master, timeout=TIMEOUT)
    assert answer.status_code == 202, answer.text
    ticks = wait_until(lambda: [t for t in read_log(app_env, "timer")[before:] if not t["schedule_status"]])
    assert ticks[0]["past_due"] is False
    for name, body, code, says in (
        ("nosuch", {"input": ""}, 404, "no function named 'nosuch'"),
        ("echo", {"input": ""}, 400, "runs timer functions this way"),
        ("tick", None, 400, "send a JSON object body"),
    ):
        answer = requests.post(
            f"{host.url}/admin/functions/{name}", json=body, headers=master, timeout=TIMEOUT
        )
        assert (answer.status_code, says in answer.text) == (code, True), answer.text


def test_occurrence_missed_while_down_fires_past_due(tmp_path: Path, app_env: Path) -> None:
    status = tmp_path / "state" / "host" / "timers" / "tick.json"
    status.parent.mkdir(parents=True)
    status.write_text(
        json.dumps(
            {
                "Last": "2020-01-01T00:00:00+00:00",
                "Next": "2020-01-01T00:00:02+00:00",
                "LastUpdated": "2020-01-01T00:00:00+00:00",
            }
        )
    )
    with LocalHost(APP, tmp_path / "state", out=io.StringIO()):
        first = wait_until(lambda: read_log(app_env, "timer"), timeout=8)[0]
    assert first["past_due"] is True and first["schedule_status"]["Last"].startswith("2020-01-01")
    assert datetime.fromisoformat(json.loads(status.read_text())["Next"]) > datetime(2024, 1, 1, tzinfo=UTC)


# --- one system key per extension; URLs from the host's own address -------------------------------------
def test_management_urls_carry_the_durable_key_which_opens_only_the_durable_api(host: LocalHost) -> None:
    answer = requests.post(
        f"{host.url}/api/orchestrators/wait_for_job/keyed-1",
        json={"timeout_s": 60},
        headers={**fkey(host), "Host": "evil.example:8080"},
        timeout=TIMEOUT,
    )
    assert answer.status_code == 202, answer.text
    payload = answer.json()
    urls = [v for k, v in payload.items() if k.endswith("Uri")]
    assert urls and all(u.startswith(f"{host.url}/runtime/webhooks/durabletask/") for u in urls)
    assert not any("evil.example" in u for u in [*urls, answer.headers["Location"]])
    assert all(f"code={host.durable_key}" in u for u in urls)
    assert host.system_key not in answer.text and host.function_key not in answer.text
    # the key from the URLs opens the Durable API ...
    assert requests.get(payload["statusQueryGetUri"], timeout=TIMEOUT).status_code == 202
    # ... but neither the Event Grid webhook nor an admin-level route, nor a function route
    eg = requests.post(
        eg_url(host, code=host.durable_key),
        json=[eg_event(1)],
        headers={"aeg-event-type": "Notification"},
        timeout=TIMEOUT,
    )
    assert eg.status_code == 401
    admin = requests.get(f"{host.url}/api/admin/ping", params={"code": host.durable_key}, timeout=TIMEOUT)
    assert admin.status_code == 401
    echo = requests.post(
        f"{host.url}/api/echo", data=b"x", params={"code": host.durable_key}, timeout=TIMEOUT
    )
    assert echo.status_code == 401
    # the Event Grid key opens its webhook only; the master key opens both
    assert (
        requests.post(
            eg_url(host, code=host.eventgrid_key),
            json=[eg_event(2)],
            headers={"aeg-event-type": "Notification"},
            timeout=TIMEOUT,
        ).status_code
        == 202
    )
    assert (
        requests.get(
            payload["statusQueryGetUri"].replace(host.durable_key, host.eventgrid_key), timeout=TIMEOUT
        ).status_code
        == 401
    )
    assert (
        requests.get(
            payload["statusQueryGetUri"].replace(host.durable_key, host.system_key), timeout=TIMEOUT
        ).status_code
        == 202
    )
    requests.post(payload["terminatePostUri"].replace("{text}", "done"), timeout=TIMEOUT)


def test_a_keys_file_from_before_extension_keys_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "host" / "keys.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"functionKey": "old-function", "systemKey": "old-system"}))
    keys = load_or_create_keys(tmp_path, environ={})
    assert (keys.function_key, keys.system_key) == ("old-function", "old-system")
    stored = json.loads(path.read_text())
    assert set(stored["systemKeys"]) == {"durabletask_extension", "eventgrid_extension"}
    assert stored["functionKey"] == "old-function" and stored["systemKey"] == "old-system"
    assert load_or_create_keys(tmp_path, environ={}) == keys  # generated once
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- hostile input: 4xx with what to send, never a 500 ------------------------------------------------------
DEEP_JSON = b"[" * 100_000 + b"]" * 100_000


def test_deeply_nested_json_is_a_400_on_every_json_route(host: LocalHost) -> None:
    payload = start_wait_for_job(host, instance_id="deep-1")
    targets = [
        (f"{host.url}/api/echo", fkey(host)),
        (f"{host.url}/api/orchestrators/wait_for_job", fkey(host)),
        (eg_url(host), {"aeg-event-type": "Notification"}),
        (payload["sendEventPostUri"].replace("{eventName}", "job_done"), {}),
        (f"{host.url}/runtime/webhooks/durabletask/orchestrators/wait_for_job?code={host.durable_key}", {}),
    ]
    for url, headers in targets:
        answer = requests.post(
            url, data=DEEP_JSON, headers={**headers, "Content-Type": "application/json"}, timeout=TIMEOUT
        )
        assert answer.status_code == 400, (url, answer.status_code, answer.text[:200])
        assert "nests deeper than 64" in answer.text
    # a string full of brackets is not nesting
    flat = json.dumps({"text": "[" * 10_000}).encode()
    assert (
        requests.post(f"{host.url}/api/echo", data=flat, headers=fkey(host), timeout=TIMEOUT).status_code
        == 201
    )


def test_an_event_with_a_malformed_event_time_is_acknowledged_and_skipped(
    host: LocalHost, app_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = {**eg_event(1), "eventTime": "yesterday"}
    cloud_bad = {
        "specversion": "1.0",
        "id": "c1",
        "source": "s",
        "type": "t",
        "time": "not-a-time",
        "data": {},
    }
    with caplog.at_level("WARNING", logger="functions_host.http.eventgrid"):
        answer = requests.post(
            eg_url(host), json=[bad, eg_event(2)], headers={"aeg-event-type": "Notification"}, timeout=TIMEOUT
        )
        cloud = requests.post(eg_url(host), json=cloud_bad, timeout=TIMEOUT)
    assert answer.status_code == 202 and cloud.status_code == 202
    assert [e["id"] for e in read_log(app_env, "event")] == ["e2"]  # the good one still ran
    assert "skipped malformed event 0 (id 'e1')" in caplog.text and "(id 'c1')" in caplog.text


def test_a_batch_over_5000_events_is_refused(host: LocalHost, app_env: Path) -> None:
    events = [eg_event(i) for i in range(5001)]
    answer = requests.post(eg_url(host), json=events, headers={"aeg-event-type": "Notification"}, timeout=60)
    assert answer.status_code == 413 and "at most 5000" in answer.text
    assert read_log(app_env, "event") == []
