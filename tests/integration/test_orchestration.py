"""The retraining orchestration under the real Durable Functions SDK replay, through the local host.

Everything runs for real except the ML platform: the local Functions host (SQLite history, HTTP on
127.0.0.1), the HTTP trigger (`POST /api/retrain`, `GET /api/retrain/{id}`), the Event Grid webhook and
trigger, the timer function, the orchestrators and the activities. The platform is the in-memory
`MLPlatform` adapter of `memory_platform.py` (jobs take 0.3 s and post Azure ML's event to the host's
webhook), so each path (lost event, failed job, gate rejection, broken slot, duplicate events) is
scripted and fast. The real local platform (trainer subprocess, MLflow, azmlinfsrv slots) is covered by
tests/e2e/test_full_cycle.py.

A `{"ticker": X}` request is a fleet of one (issue 22): each mechanic below is proven through the fleet
path users get (guard -> one batch: fetch, champions, ONE training job, gate, register -> the endpoint's
rollout). The per-ticker `retrain_orchestrator` no longer has a trigger; the `legacy` tests start it as
code from before did, to prove an in-flight cycle still replays and finishes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from retrain import naming, trainers
from retrain.host_client import HostClient, http_json
from retrain.vocabulary import TAG_BATCH, TAG_FLEET
from retrain.workflow import CycleInput
from tests.helpers import batch_status, calls, outcome, run_cycle, start, wait

REPO = Path(__file__).resolve().parents[2]


def cycles(host) -> list[str]:
    """The ids of the host's per-ticker cycles (`retrain_orchestrator`: none is started any more), sorted."""
    return sorted(
        s["instanceId"] for s in host.engine.list_instances() if s["name"] == "retrain_orchestrator"
    )


def run_legacy_cycle(host, instance_id: str) -> dict:
    """Start MSFT's cycle as code from before fleet serving did: its input has no `serving_target` (a
    start through the Durable HTTP API with today's settings otherwise), and wait for it."""
    cycle = {**CycleInput.from_settings("MSFT", "http").to_dict(), "serving_target": None}
    url = f"{host.url}/runtime/webhooks/durabletask/orchestrators/retrain_orchestrator/{instance_id}"
    code, answer = http_json("POST", f"{url}?code={host.durable_key}", cycle)
    assert code == 202, answer
    return wait(host, instance_id)


def test_happy_path_then_a_second_cycle_swaps_slots(host, memory, shared_endpoint):
    first = run_cycle(host)  # no body: the first of RETRAIN_TICKERS, a fleet of one
    assert first["runtime_status"] == "Completed", first
    fleet_id = first["instance_id"]
    assert first["fleet"] is True and naming.parse_fleet_instance_id(fleet_id) and cycles(host) == []
    out, msft = first["output"], outcome(first)
    assert list(out["tickers"]) == ["MSFT"] and out["counts"]["deployed"] == 1
    assert msft["status"] == "deployed" and msft["model_version"] == "1" and msft["bundle_version"] == "1"
    assert msft["endpoint"] == shared_endpoint and out["endpoints"] == {
        shared_endpoint: f"memory://{shared_endpoint}/score"
    }
    batch = naming.batch_instance_id(fleet_id, 0)
    assert [b["job_name"] for b in out["batches"]] == [naming.job_name(batch)]
    assert batch_status(host, fleet_id)["ids"]["job_signal"] == "event"  # Event Grid woke it, not the poll
    assert memory.champions["msft-forecaster"] == "1"
    assert memory.endpoints[shared_endpoint]["traffic"] == {"blue": 100}
    tags = memory.models["msft-forecaster"][0].tags
    assert tags["orchestration_instance_id"] == tags[TAG_BATCH] == batch and tags[TAG_FLEET] == fleet_id
    assert tags["gate_decision"] == "deploy" and tags["trigger"] == "http"
    assert tags["data_version"] == msft["data_version"] and tags["code_version"] and tags["metric_mae"] == "1"
    assert [s["step"] for s in first["steps"]] == ["guard", "batches", "await_rollout"]
    assert all(s["seconds"] is not None and s["seconds"] >= 0 for s in first["steps"])
    assert set(out["timings_s"]) == {"guard", "batches", "await_rollout"} and out["elapsed_s"] >= 0
    # First bundle: no old slot to canary against, 0 % -> 100 %.
    assert calls(memory, "set_traffic") == [{"blue": 100}]

    second = run_cycle(host, {"ticker": "msft"})  # the same as {"tickers": ["MSFT"]}
    assert second["runtime_status"] == "Completed", second
    assert outcome(second)["bundle_version"] == "2" and outcome(second)["status"] == "deployed"
    assert calls(memory, "set_traffic")[-2:] == [{"blue": 90, "green": 10}, {"green": 100, "blue": 0}]
    assert memory.endpoints[shared_endpoint]["traffic"] == {"green": 100}
    assert "blue" not in memory.endpoints[shared_endpoint]["slots"]  # retired
    assert memory.champions["msft-forecaster"] == "2"


def test_an_input_from_older_code_keeps_the_inline_rollout(host, memory):
    """The legacy path: an orchestration started by code from before fleet serving (its input has no
    `serving_target`) deploys its single model itself, blue/green on the ticker's endpoint, as that code
    did, so its replay after an upgrade does what it did."""
    first = run_legacy_cycle(host, "retrain-msft-20200101t000001z")
    assert first["runtime_status"] == "Completed", first
    assert (first["output"]["slot"], first["output"]["old_slot"]) == ("blue", None)
    assert [s["step"] for s in first["steps"]][-1] == "set_champion" and "bundle" not in first["output"]
    second = run_legacy_cycle(host, "retrain-msft-20200101t000002z")
    assert second["runtime_status"] == "Completed", second
    assert (second["output"]["slot"], second["output"]["old_slot"]) == ("green", "blue")
    assert calls(memory, "set_traffic")[-2:] == [{"blue": 90, "green": 10}, {"green": 100, "blue": 0}]
    served = memory.endpoints["msft-forecast"]
    assert served["traffic"] == {"green": 100} and "blue" not in served["slots"]
    assert served["slots"]["green"]["model"]["name"] == "msft-forecaster"  # a single model, no bundle
    assert memory.bundles == {} and memory.champions["msft-forecaster"] == "2"


def test_a_cycle_started_by_older_code_still_replays_and_finishes(host, memory, shared_endpoint):
    """`retrain_orchestrator` stays registered for cycles in flight when the code changed: one started by
    the code just before (its input names its serving target) still finishes, its model going out
    through the endpoint's rollout; and a fleet of one started beside it waits for it (the guard sees
    both kinds of holders)."""
    legacy_id = "retrain-msft-20200101t000003z"
    cycle = CycleInput.from_settings("MSFT", "http").to_dict()
    url = f"{host.url}/runtime/webhooks/durabletask/orchestrators/retrain_orchestrator/{legacy_id}"
    code, answer = http_json("POST", f"{url}?code={host.durable_key}", cycle)
    assert code == 202, answer
    code, busy = start(host, {"ticker": "MSFT"})  # it holds MSFT from its creation on (Pending included)
    assert code == 409 and busy["instance_id"] == legacy_id, busy
    status = wait(host, legacy_id)
    assert status["runtime_status"] == "Completed", status
    assert status["output"]["status"] == "deployed" and status["output"]["bundle_version"] == "1"
    assert memory.endpoints[shared_endpoint]["traffic"] == {"blue": 100}
    assert memory.champions["msft-forecaster"] == "1"


def test_lost_event_is_covered_by_polling(host, memory, monkeypatch):
    monkeypatch.setenv("RETRAIN_JOB_POLL_MINUTES", "0.02")  # 1.2 s
    memory.script.host_url = None  # the platform never delivers the event
    status = run_cycle(host)
    assert status["runtime_status"] == "Completed", status
    assert batch_status(host, status["instance_id"])["ids"]["job_signal"] == "poll"
    assert memory.events_sent == [] and calls(memory, "get_job")
    assert outcome(status)["status"] == "deployed"


def test_failed_job_fails_the_ticker_and_registers_nothing(host, memory):
    memory.script.job_status = "Failed"
    status = run_cycle(host)
    assert status["runtime_status"] == "Completed" and status["output"]["counts"]["failed"] == 1
    msft = outcome(status)
    assert msft["status"] == "failed", msft
    assert "ended Failed" in msft["error"] and "nothing was registered" in msft["error"]
    assert memory.models == {} and memory.endpoints == {} and memory.champions == {}


def test_gate_rejection_registers_but_deploys_nothing(host, memory):
    assert outcome(run_cycle(host))["status"] == "deployed"  # a champion exists
    memory.script.metrics = {**memory.script.metrics, "mae": 5.0, "mae_vs_naive": 4.2}
    status = run_cycle(host)
    assert status["runtime_status"] == "Completed" and outcome(status)["status"] == "rejected"
    assert outcome(status)["gate"] and outcome(status)["model_version"] == "2"
    rejected = memory.models["msft-forecaster"][-1]
    assert rejected.version == "2" and rejected.tags["gate_decision"] == "reject"
    assert memory.champions["msft-forecaster"] == "1"
    assert calls(memory, "begin_deployment") == ["blue"]  # only the first cycle deployed
    assert memory.endpoints["msft-forecast"]["traffic"] == {"blue": 100}


def test_force_overrides_the_gate_and_is_recorded(host, memory):
    memory.script.metrics = {**memory.script.metrics, "mae": 5.0}
    status = run_cycle(host, {"force": True})
    assert outcome(status)["status"] == "deployed", status
    assert memory.models["msft-forecaster"][0].tags["gate_forced"] == "true"


def test_failed_smoke_test_rolls_traffic_back(host, memory, shared_endpoint):
    assert outcome(run_cycle(host))["status"] == "deployed"
    memory.script.broken_unpinned = True  # once the canary serves, the stable URL answers NaN
    status = run_cycle(host)
    msft = outcome(status)
    assert status["runtime_status"] == "Completed" and msft["status"] == "failed", status
    assert "smoke test of MSFT on slot endpoint" in msft["error"], msft["error"]
    assert "traffic is back on blue" in msft["error"]
    assert calls(memory, "set_traffic")[-2:] == [{"blue": 90, "green": 10}, {"blue": 100, "green": 0}]
    assert memory.endpoints[shared_endpoint]["traffic"] == {"blue": 100, "green": 0}
    assert memory.champions["msft-forecaster"] == "1"  # the champion is untouched and serving
    assert "blue" in memory.endpoints[shared_endpoint]["slots"]


def test_slow_smoke_test_rolls_back_too(host, memory, monkeypatch):
    assert outcome(run_cycle(host))["status"] == "deployed"
    monkeypatch.setenv("RETRAIN_SMOKE_MAX_LATENCY_MS", "0")  # every call is too slow
    msft = outcome(run_cycle(host))
    assert msft["status"] == "failed" and "RETRAIN_SMOKE_MAX_LATENCY_MS" in msft["error"], msft
    assert memory.endpoints["msft-forecast"]["traffic"] == {"blue": 100, "green": 0}


def test_duplicate_events_register_exactly_once(host, memory):
    memory.script.event_copies = 3  # Event Grid delivers at least once
    status = run_cycle(host)
    assert outcome(status)["status"] == "deployed", status
    assert calls(memory, "register_batch_model") == [("MSFT", "1")] and calls(memory, "set_champion") == ["1"]
    deadline = time.monotonic() + 10
    while len(memory.events_sent) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [code[0] for _, code in memory.events_sent] == ["2", "2", "2"]  # all acknowledged (2xx)


def test_second_request_for_a_busy_ticker_gets_409(host, memory):
    memory.script.job_seconds = 3.0
    code, first = start(host, {"ticker": "msft"})
    assert code == 202 and set(first) == {"id", "statusQueryGetUri", "terminatePostUri"}, first
    code, busy = start(host, {"ticker": "MSFT", "force": True})
    assert code == 409, busy
    assert busy["instance_id"] == first["id"] and first["id"] in busy["statusQueryGetUri"]
    assert busy["skipped"] == {"MSFT": first["id"]}  # a fleet's refusal, its one holder on top
    code, fleet = start(host, {"tickers": ["MSFT"]})  # the same request
    assert code == 409 and fleet["instance_id"] == first["id"], fleet
    code, other = start(host, {"ticker": "AAPL"})  # another ticker is not blocked
    assert code == 202, other
    assert outcome(wait(host, first["id"]))["status"] == "deployed"
    assert outcome(wait(host, other["id"]), "AAPL")["status"] == "deployed"
    code, again = start(host, {"ticker": "MSFT"})  # and once it finished, MSFT may run again
    assert code == 202, again
    wait(host, again["id"])


def test_bad_request_and_unknown_instance(host):
    code, answer = start(host, {"ticker": "MSFT", "lookback_days": "a year"})
    assert code == 400 and "lookback_days" in answer["error"]
    code, answer = start(host, b"not json")
    assert code == 400 and "not valid JSON" in answer["error"]
    code, answer = HostClient(host.url, host.function_key).cycle_status("retrain-msft-1999w01")
    assert code == 404 and "no orchestration" in answer["error"]
    code, _ = http_json("POST", f"{host.url}/api/retrain", {})  # function auth level: a key is required
    assert code == 401


def test_timer_starts_one_fleet_per_week_and_a_second_firing_finds_it(
    host, memory, monkeypatch, shared_endpoint
):
    monkeypatch.setenv("RETRAIN_TICKERS", "MSFT,AAPL")
    host.index.invoke_timer("retrain_timer", past_due=False, schedule_status=None)
    host.index.invoke_timer("retrain_timer", past_due=False, schedule_status=None)  # same week: no-op
    fleets = [s["instanceId"] for s in host.engine.list_instances() if s["name"] == "fleet_orchestrator"]
    assert fleets == [naming.scheduled_fleet_instance_id(datetime.now(UTC))] and cycles(host) == []
    status = wait(host, fleets[0])
    assert status["runtime_status"] == "Completed", status
    out = status["output"]
    assert {t: o["status"] for t, o in out["tickers"].items()} == {"MSFT": "deployed", "AAPL": "deployed"}
    host.index.invoke_timer("retrain_timer", past_due=False, schedule_status=None)  # finished: still a no-op
    assert [
        s["instanceId"] for s in host.engine.list_instances() if s["name"] == "fleet_orchestrator"
    ] == fleets
    assert len(calls(memory, "submit_batch_training")) == 1  # one batch, one training job


# -- Azure's semantics, mirrored by the memory platform: the orchestrator must wait them out -------------


def test_traffic_update_that_stays_updating_is_waited_for(host, memory, shared_endpoint):
    memory.script.op_polls = 1  # each traffic change still shows the old traffic, Updating, at the first read
    first = run_cycle(host)  # the live smoke test after {blue: 100} would meet a 404 if it did not wait
    assert outcome(first)["status"] == "deployed", first
    second = run_cycle(host)
    assert outcome(second)["status"] == "deployed", second
    assert memory.endpoints[shared_endpoint]["traffic"] == {"green": 100}
    assert "blue" not in memory.endpoints[shared_endpoint]["slots"]
    assert calls(memory, "busy") == []  # it never wrote while an operation was still running


def test_busy_endpoint_is_waited_out_not_retried_quickly(host, memory):
    assert outcome(run_cycle(host))["status"] == "deployed"
    memory.script.busy_reads = 1  # the next write meets someone else's operation (Azure: 409)
    status = run_cycle(host)
    assert outcome(status)["status"] == "deployed", status
    assert calls(memory, "busy") == ["deployment"]  # refused once, then it waited until the endpoint was free
    assert memory.endpoints["msft-forecast"]["traffic"] == {"green": 100}


def test_failed_idle_slot_is_deleted_before_deploying(host, memory, shared_endpoint):
    assert outcome(run_cycle(host))["status"] == "deployed"
    assert memory.endpoints[shared_endpoint]["traffic"] == {"blue": 100}
    memory.script.failing_deployments = {"green"}
    failed = outcome(run_cycle(host))
    assert failed["status"] == "failed" and "to slot green ended Failed" in failed["error"], failed
    assert memory.endpoints[shared_endpoint]["traffic"] == {"blue": 100, "green": 0}
    third = run_cycle(host)  # green is Failed: Azure refuses to update it, so it is deleted first
    assert outcome(third)["status"] == "deployed", third
    ops = [(c, a) for c, a in memory.calls if c in ("delete_deployment", "begin_deployment")]
    assert ops[-3:] == [
        ("delete_deployment", "green"),
        ("begin_deployment", "green"),
        ("delete_deployment", "blue"),
    ]
    assert outcome(third)["bundle_version"] == "3"  # version 2 (on the failed slot) is never reused


def test_forged_job_events_are_checked_with_the_platform(host, memory):
    memory.script.job_seconds = 4.0
    code, answer = start(host)
    assert code == 202
    job_name = naming.job_name(naming.batch_instance_id(answer["id"], 0))
    deadline = time.monotonic() + 30
    # The forged events must reach an orchestrator that waits for the job (its status says so), not one
    # still submitting it: wait for that state rather than for a guessed half second.
    while not (job_name in memory.jobs and batch_status(host, answer["id"]).get("step") == "wait_for_job"):
        assert time.monotonic() < deadline, "the batch never waited for its job"
        time.sleep(0.05)
    memory.deliver_event(job_name, "Failed")  # forged: the job is still running
    memory.deliver_event(job_name, "Completed")  # early: the job is still running
    status = wait(host, answer["id"])
    assert outcome(status)["status"] == "deployed", status  # the real job completed later
    assert batch_status(host, answer["id"])["ids"]["job_signal"] == "event"
    assert calls(memory, "get_job").count(job_name) >= 3  # every event was checked with the platform


def test_permanent_failure_fails_at_once(host, memory):
    memory.script.permanent_failures = {"get_batch_summary"}
    status = run_cycle(host)
    msft = outcome(status)
    assert msft["status"] == "failed" and "scripted bad request" in msft["error"], status
    assert len(calls(memory, "get_batch_summary")) == 1  # not retried: it would only fail again
    assert memory.models == {}


def test_transient_failure_is_retried(host, memory):
    memory.script.transient_failures = {"get_champion": 2}
    status = run_cycle(host)
    assert outcome(status)["status"] == "deployed", status
    assert len(calls(memory, "get_champion")) == 3


def test_rollback_never_sends_traffic_to_a_dead_old_slot(host, memory, shared_endpoint):
    assert outcome(run_cycle(host))["status"] == "deployed"
    writes = len(calls(memory, "set_traffic"))
    memory.script.dead_slots = {"blue"}  # the champion's server goes down: the canary's stable URL fails
    msft = outcome(run_cycle(host))
    assert msft["status"] == "failed", msft
    assert "old slot blue is Failed, not live" in msft["error"], msft["error"]
    assert "smoke test of MSFT on slot endpoint" in msft["error"]
    assert calls(memory, "set_traffic")[writes:] == [{"blue": 90, "green": 10}]  # no blind "100 % to blue"
    assert memory.champions["msft-forecaster"] == "1"


def test_the_requests_trainer_and_hyperparameters_reach_the_platform_and_the_registry(host, memory):
    code, bad = start(host, {"trainer": "../../tmp/mine"})
    assert (
        code == 400
        and f"use one of the trainers in this repository: {', '.join(trainers.names())}" in bad["error"]
    )
    assert memory.jobs == {}

    status = run_cycle(host, {"trainer": "ridge", "hyperparameters": {"alpha": 0.5, "window": "10"}})
    assert outcome(status)["status"] == "deployed", status
    [job] = memory.jobs.values()
    assert (job["request"].trainer, job["request"].hyperparameters) == (
        "ridge",
        {"alpha": 0.5, "window": "10"},
    )
    tags = memory.models["msft-forecaster"][0].tags
    assert (tags["trainer"], tags["model_family"]) == ("ridge", "ridge")

    # The default trainer, with its epochs from RETRAIN_MAX_EPOCHS: a challenger of another family.
    second = run_cycle(host)
    request = memory.jobs[second["output"]["batches"][0]["job_name"]]["request"]
    assert (request.trainer, request.hyperparameters) == ("lstm", {"max_epochs": "30"})
    assert [e["champion"]["version"] for e in request.entries] == ["1"]
    assert memory.models["msft-forecaster"][1].tags["model_family"] == "lstm"


def test_the_gate_judges_the_metrics_the_settings_name(host, memory, monkeypatch):
    monkeypatch.setenv("RETRAIN_GATE_METRIC", "rmse")
    monkeypatch.setenv("RETRAIN_GATE_BASELINE_METRIC", "naive_rmse")
    # Good on rmse, terrible on mae: deployed, because the gate reads rmse.
    memory.script.metrics = {"mae": 50.0, "naive_mae": 1.0, "rmse": 0.9, "naive_rmse": 1.0}
    status = run_cycle(host)
    assert outcome(status)["status"] == "deployed", status
    assert "baseline check passed: rmse 0.9 <= naive_rmse 1 x (1 + 0.05) = 1.05" in outcome(status)["gate"]
