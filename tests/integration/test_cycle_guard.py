"""Issue 20, items 1 and 7, against the real local host on the in-memory platform: the orchestrator holds
its own rules (input, one cycle per ticker) even for a start through the Durable HTTP API with the
extension key; a 202 hands out no key; concurrent starts of one instance or one ticker never give a 5xx."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

import requests

from retrain.host_client import http_json, with_code
from retrain.workflow import CycleInput
from tests.helpers import batch_status, calls, deliver, grid_event, outcome, start, wait

N = 10
BREACH = {"azureml_modelmonitor_threshold_breached": "features violate their thresholds", "ticker": "MSFT"}


def _durable_start(host, instance_id: str, cycle: dict[str, Any]) -> int:
    """POST /runtime/webhooks/durabletask/orchestrators/retrain_orchestrator/{id} with the extension key."""
    url = (
        f"{host.url}/runtime/webhooks/durabletask/orchestrators/retrain_orchestrator/{instance_id}"
        f"?code={host.durable_key}"
    )
    code, _ = http_json("POST", url, cycle)
    return code


def _cycle(**overrides: Any) -> dict[str, Any]:
    return {**CycleInput.from_settings("MSFT", "http").to_dict(), **overrides}


def _waiting_for_job(host, fleet_id: str) -> None:
    """Until the fleet of one's batch waits for its training job."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if batch_status(host, fleet_id).get("step") == "wait_for_job":
            return
        time.sleep(0.1)
    raise AssertionError(f"{fleet_id}'s batch never reached wait_for_job")


def test_a_durable_api_start_beside_a_running_cycle_ends_without_touching_the_platform(host, memory):
    memory.script.job_seconds, memory.script.job_release = 60.0, threading.Event()
    code, first = start(host, {"ticker": "MSFT"})
    assert code == 202, first
    _waiting_for_job(host, first["id"])
    before = len(memory.calls)
    second = "retrain-msft-20200101t000000z"  # an older-looking id: the order is the creation time's
    assert _durable_start(host, second, _cycle(gate_alpha=0.4, canary_percent=100, force=True)) == 202
    status = wait(host, second)
    assert status["runtime_status"] == "Failed", status
    assert f"ticker MSFT is already being retrained by {first['id']}" in status["error"]
    assert [c for c in memory.calls[before:] if c[0] != "get_job"] == []  # no data, job, model or slot
    memory.script.job_release.set()
    assert outcome(wait(host, first["id"]))["status"] == "deployed"


def test_a_durable_api_start_with_input_the_edge_refuses_fails_before_any_activity(host, memory):
    for instance_id, cycle, named in (
        ("retrain-msft-20200101t000001z", _cycle(gate_alpha=1.0), "gate_alpha"),
        ("retrain-msft-20200101t000002z", _cycle(canary_percent=150), "canary_percent"),
        ("retrain-msft-20200101t000003z", _cycle(ticker="msft"), "ticker"),
        ("retrain-msft-20200101t000004z", _cycle(hyperparameters={"x": "$(id)"}), "x"),
        ("retrain-msft-20200101t000005z", _cycle(hyperparameters={"max_epochs": 100_000_000}), "max_epochs"),
    ):
        assert _durable_start(host, instance_id, cycle) == 202
        status = wait(host, instance_id)
        assert status["runtime_status"] == "Failed", status
        assert status["error"].startswith("invalid cycle input:") and named in status["error"], status
    assert memory.calls == []


def test_the_202_carries_no_key_and_the_function_key_reads_and_terminates(host, memory):
    memory.script.job_seconds, memory.script.job_release = 60.0, threading.Event()
    secrets = (host.durable_key, host.system_key, host.eventgrid_key, host.function_key)
    answer = requests.post(
        f"{host.url}/api/retrain", params={"code": host.function_key}, json={"ticker": "MSFT"}, timeout=30
    )
    assert answer.status_code == 202 and not any(s in answer.text for s in secrets), answer.text
    links = answer.json()
    assert set(links) == {"id", "statusQueryGetUri", "terminatePostUri"}
    assert answer.headers["Location"] == links["statusQueryGetUri"] == f"{host.url}/api/retrain/{links['id']}"
    assert http_json("GET", links["statusQueryGetUri"])[0] == 401  # a key is still required
    code, status = http_json("GET", with_code(links["statusQueryGetUri"], host.function_key))
    assert code == 200 and status["instance_id"] == links["id"], status
    code, busy = start(host, {"ticker": "MSFT"})
    assert code == 409 and not any(s in json.dumps(busy) for s in secrets), busy
    assert busy["statusQueryGetUri"] == links["statusQueryGetUri"]
    terminate = with_code(links["terminatePostUri"], host.function_key) + "&reason=operator"
    assert http_json("POST", with_code(links["terminatePostUri"], host.durable_key))[0] == 401
    code, body = http_json("POST", terminate)
    assert code == 202 and body["terminating"] is True, body
    assert wait(host, links["id"])["runtime_status"] == "Terminated"
    code, body = http_json("POST", terminate)
    assert code == 409 and "already Terminated" in body["error"], body
    memory.script.job_release.set()


def _race(calls: list[Any]) -> list[Any]:
    """Run the callables at once (a barrier); their results, or the exception's name."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 - a reset connection counts as a failure
            results[i] = type(exc).__name__

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def test_ten_concurrent_monitor_starts_of_one_ticker_and_day_give_no_5xx(host, memory):
    body = {"ticker": "MSFT", "from": "2012-07-02", "to": "2012-07-02", "source": "sample"}
    url = f"{host.url}/api/monitor?code={host.function_key}"
    answers = _race([lambda: http_json("POST", url, body) for _ in range(N)])
    codes = Counter(a[0] if isinstance(a, tuple) else a for a in answers)
    assert set(codes) <= {202, 409} and codes[202] >= 1, codes
    started = {a[1]["id"] for a in answers if a[0] == 202}
    assert len(started) == codes[202]  # each 202 a different instance (a new second)
    assert all(a[1]["instance_id"] in started for a in answers if a[0] == 409)  # 409 names a real one
    for instance_id in started:  # the monitor's own routes, under the function key
        code, status = http_json("GET", with_code(f"{host.url}/api/monitor/{instance_id}", host.function_key))
        assert code == 200 and status["instance_id"] == instance_id, status
        http_json("POST", with_code(f"{host.url}/api/monitor/{instance_id}/terminate", host.function_key))


def test_breaches_and_http_starts_at_once_start_one_cycle_and_no_5xx(host, memory):
    memory.script.job_seconds, memory.script.job_release = 60.0, threading.Event()
    retrain = f"{host.url}/api/retrain?code={host.function_key}"
    breaches = [
        (lambda i=i: deliver(host, [grid_event(f"msft-monitor-run-{i}", "Failed", BREACH)])) for i in range(N)
    ]
    posts = [(lambda: http_json("POST", retrain, {"ticker": "MSFT"})[0]) for _ in range(N)]
    results = _race(breaches + posts)
    webhook, http = Counter(results[:N]), Counter(results[N:])
    assert set(webhook) <= {200, 202}, webhook  # every breach acknowledged, none a 5xx
    assert set(http) <= {202, 409}, http
    active: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # a fleet that lost the race ends at once; wait for that
        listing = [i for i in host.engine.list_instances() if i["name"] == "fleet_orchestrator"]
        active = [i["instanceId"] for i in listing if i["runtimeStatus"] in ("Pending", "Running")]
        if len(active) == 1:
            break
        time.sleep(0.1)
    assert len(active) == 1, listing  # one fleet of one holding MSFT, whoever won
    memory.script.job_release.set()
    assert outcome(wait(host, active[0]))["status"] == "deployed"
    assert len(calls(memory, "submit_batch_training")) == 1  # one training job, not one per start
