"""Hostile callers against the retraining Function App on the real local host (issue 9): duplicate
requests racing, ids that would smuggle a query into the Durable API, files a request may not read,
and malformed input. The ML platform is the in-memory adapter (see test_orchestration.py)."""

from __future__ import annotations

import threading
import time
import urllib.parse
from typing import Any

import requests

from tests.helpers import start, wait

TIMEOUT = 30


def test_a_20_way_race_on_one_ticker_gives_one_202_and_nineteen_409s(host, memory):
    memory.script.job_seconds = 8.0  # the cycle stays busy through the whole race
    url = f"{host.url}/api/retrain?code={host.function_key}"
    barrier = threading.Barrier(20)
    answers: list[Any] = []

    def post() -> None:
        barrier.wait()
        try:
            answer = requests.post(url, json={"ticker": "MSFT"}, timeout=TIMEOUT)
            answers.append((answer.status_code, answer.json()))
        except requests.RequestException as exc:  # a reset or refused connection
            answers.append((type(exc).__name__, None))

    threads = [threading.Thread(target=post) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 2)
    codes = sorted(str(code) for code, _ in answers)
    assert codes == ["202"] + ["409"] * 19, codes
    started = next(body for code, body in answers if code == 202)
    assert all(body["instance_id"] == started["id"] for code, body in answers if code == 409)
    assert wait(host, started["id"])["runtime_status"] == "Completed"


def test_status_ids_cannot_smuggle_a_query_or_fragment(host, memory):
    memory.script.job_seconds = 5.0
    code, first = start(host, {"ticker": "MSFT"})
    assert code == 202, first
    key = {"code": host.function_key}
    for raw in ("%3F", "%23", "%3FshowHistory=true", f"{first['id']}%3FshowHistory=true", "x%23y"):
        answer = requests.get(f"{host.url}/api/retrain/{raw}", params=key, timeout=TIMEOUT)
        assert answer.status_code == 404, (raw, answer.status_code, answer.text[:300])
        assert "ids look like" in answer.json()["error"]
    # a prefix of a real id followed by a query is not that instance either
    prefix = first["id"][:-3]
    answer = requests.get(
        f"{host.url}/api/retrain/{prefix}%3FinstanceIdPrefix={prefix}", params=key, timeout=TIMEOUT
    )
    assert answer.status_code == 404
    # the real id still works, and the readable URL in a 409 is escaped
    assert requests.get(f"{host.url}/api/retrain/{first['id']}", params=key, timeout=TIMEOUT).ok
    code, busy = start(host, {"ticker": "MSFT"})
    assert code == 409 and busy["statusQueryGetUri"].endswith("/" + urllib.parse.quote(first["id"]))
    wait(host, first["id"])


def test_a_request_cannot_read_local_files(host, memory, tmp_path, monkeypatch):
    secrets = (host.function_key, host.system_key, host.durable_key, host.eventgrid_key)
    for source in ("csv:/proc/self/environ", "csv:../../etc/passwd", f"csv:{tmp_path}/x.csv"):
        answer = requests.post(
            f"{host.url}/api/retrain",
            params={"code": host.function_key},
            json={"source": source},
            timeout=TIMEOUT,
        )
        assert answer.status_code == 400, answer.text[:300]
        assert "RETRAIN_DATA_DIR" in answer.text
        assert not any(secret in answer.text for secret in secrets)
    assert memory.calls == []  # nothing was fetched or registered


def test_malformed_bodies_get_a_400_that_echoes_little(host):
    url = f"{host.url}/api/retrain?code={host.function_key}"
    deep = requests.post(url, data=b"[" * 100_000 + b"]" * 100_000, timeout=TIMEOUT)
    assert deep.status_code == 400
    huge = requests.post(url, json={"ticker": "A" * 10_000_000}, timeout=120)
    assert huge.status_code == 400 and len(huge.content) < 2000, len(huge.content)
    assert requests.post(url, json={"ticker": "MSFT!"}, timeout=TIMEOUT).status_code == 400


def test_an_event_naming_a_smuggled_instance_id_is_acknowledged_and_ignored(host, memory, caplog):
    event = {
        "id": "e1",
        "topic": "t",
        "subject": "experiments/x/runs/j",
        "eventType": "Microsoft.MachineLearningServices.RunCompleted",
        "eventTime": "2024-05-01T12:00:00Z",
        "data": {"runId": "j", "runTags": {"orchestration_instance_id": "x?showHistory=true"}},
        "dataVersion": "2",
    }
    with caplog.at_level("INFO"):
        answer = requests.post(
            host.event_grid_url("job_events"),
            json=[event, {**event, "id": "e2", "eventTime": "last tuesday"}],
            headers={"aeg-event-type": "Notification"},
            timeout=TIMEOUT,
        )
    assert answer.status_code == 202
    assert "'x?showHistory=true' is not a retraining id" in caplog.text
    assert "skipped malformed event 1 (id 'e2')" in caplog.text


def test_the_job_runner_retries_until_a_restarted_host_hears_the_event(tmp_path, monkeypatch):
    """The host is down when the job ends; it comes back on another port: the runner's back-off finds
    it through the state dir and delivers with the Event Grid key, within a couple of its short delays."""
    import io
    import json

    from functions_host.host import LocalHost
    from retrain.local import jobs

    app = __import__("pathlib").Path(__file__).resolve().parents[1] / "http_app" / "function_app.py"
    log_path = tmp_path / "app-log.jsonl"
    monkeypatch.setenv("HTTP_APP_LOG", str(log_path))
    for name in (
        "RETRAIN_FUNCTION_KEY",
        "RETRAIN_SYSTEM_KEY",
        "FUNCTIONS_WORKER_RUNTIME",
        "HTTP_APP_SCHEDULE",
    ):
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    state = tmp_path / "state"
    first = LocalHost(app, state, timers=False, out=io.StringIO()).start()
    old_url = first.url
    first.stop()  # the host goes down before the job ends
    event = jobs.build_job_event(
        {"job_name": "j1", "experiment_id": "1", "experiment_name": "e", "run_id": "r", "tags": {}}, True
    )
    outcome: dict = {}
    progress: list[str] = []
    runner = threading.Thread(
        target=lambda: outcome.update(
            result=jobs.deliver_with_backoff(
                event,
                state,
                old_url,
                first_delay=0.2,
                max_delay=0.5,
                bound_s=60,
                on_attempt=lambda n, detail: progress.append(detail),
            )
        )
    )
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while len(progress) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(progress) >= 2, progress  # it kept trying while the host was down
        second = LocalHost(app, state, timers=False, out=io.StringIO()).start()
        try:
            runner.join(30)
            delivered, detail, attempts = outcome["result"]
            assert delivered, detail
            events = [json.loads(line) for line in log_path.read_text().splitlines()]
            assert [e["id"] for e in events if e["kind"] == "event"] == [event["id"]]
        finally:
            second.stop()
    finally:
        runner.join(60)
