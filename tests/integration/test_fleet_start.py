"""Starting, following and terminating fleet cycles through the real local host on the in-memory platform:
`POST /api/retrain {"tickers": [...]}` (202 with `skipped`, 409 naming the holders, 400 saying what to send),
`GET /api/retrain/{fleet id}` and `POST .../terminate` (its batches terminated, their jobs canceled), and
the one way in (retrain/cycle_start.py) called with a real Durable client against the host: concurrent
starts of the same tickers in one worker make one fleet."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import azure.durable_functions as df

from functions_host.invocation import _LoopThread
from retrain import cycle_start, naming
from retrain.host_client import HostClient, http_json
from tests.helpers import calls, start, wait


def wait_until(predicate: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def submitted(memory: Any, instance_id: str) -> bool:
    return naming.job_name(instance_id) in calls(memory, "submit_batch_training") + calls(
        memory, "submit_training"
    )


def test_a_fleet_request_skips_busy_tickers_and_a_second_one_is_refused_naming_the_holders(host, memory):
    memory.script.job_seconds, memory.script.job_release = 60.0, threading.Event()
    try:
        code, goog = start(host, {"ticker": "GOOG"})  # a fleet of one, running
        assert code == 202, goog
        wait_until(lambda: submitted(memory, naming.batch_instance_id(goog["id"], 0)), "no GOOG job")
        code, fleet = start(host, {"tickers": ["msft", "GOOG", "MSFT"], "trainer": "ridge"})
        assert code == 202, fleet
        assert fleet["id"].startswith("fleet-") and fleet["skipped"] == {"GOOG": goog["id"]}
        assert fleet["statusQueryGetUri"].endswith(f"/api/retrain/{fleet['id']}")
        batch = naming.batch_instance_id(fleet["id"], 0)
        wait_until(lambda: submitted(memory, batch), "no fleet job")

        code, again = start(host, {"tickers": ["MSFT", "GOOG"]})  # everything is held: nothing starts
        assert code == 409, again
        # (GOOG: its cycle, or the fleet, which holds every ticker it was asked for while it runs)
        assert again["skipped"]["MSFT"] == fleet["id"] and again["skipped"]["GOOG"] in (
            fleet["id"],
            goog["id"],
        )
        assert set(again["holders"]) == set(again["skipped"].values())
        assert f"MSFT by {fleet['id']}" in again["error"]
        code, single = start(host, {"ticker": "MSFT"})  # a fleet of one of a fleet's ticker: refused too
        assert code == 409 and single["instance_id"] == fleet["id"], single
        code, both = start(host, {"ticker": "MSFT", "tickers": ["MSFT"]})
        assert code == 400 and "not both" in both["error"]

        code, status = HostClient(host.url, host.function_key).cycle_status(fleet["id"])
        assert code == 200 and status["fleet"] is True and status["runtime_status"] == "Running", status
        assert (status["tickers"], status["skipped"], status["batches"]) == (2, 1, 1)
    finally:
        memory.script.job_release.set()
    done = wait(host, fleet["id"])
    assert done["runtime_status"] == "Completed" and done["batches_done"] == 1, done
    out = done["output"]
    assert {t: o["status"] for t, o in out["tickers"].items()} == {"MSFT": "deployed", "GOOG": "skipped"}
    assert out["counts"]["deployed"] == 1 and out["elapsed_s"] >= 0 and out["batches"][0]["batch"] == batch
    assert wait(host, goog["id"])["runtime_status"] == "Completed"


def test_terminating_a_fleet_terminates_its_batches_and_cancels_their_jobs(host, memory, monkeypatch):
    monkeypatch.setenv("RETRAIN_TRAINING_BATCH", "1")  # two batches, both in flight
    memory.script.job_seconds, memory.script.job_release = 60.0, threading.Event()
    try:
        code, fleet = start(host, {"tickers": ["MSFT", "AAPL"]})
        assert code == 202, fleet
        batches = [naming.batch_instance_id(fleet["id"], i) for i in range(2)]
        wait_until(lambda: all(submitted(memory, b) for b in batches), "the batches' jobs were not submitted")
        code, body = terminate(host, fleet["id"], "operator stop")
        assert code == 202, body
        assert body["runtime_status"] == "Terminated"
        assert [(b["batch"], b["runtime_status"], b["job"]["status"]) for b in body["batches"]] == [
            (b, "Terminated", "Canceled") for b in batches
        ]
        assert sorted(calls(memory, "cancel_job")) == sorted(naming.job_name(b) for b in batches)
        status = wait(host, fleet["id"])
        assert status["fleet"] and status["runtime_status"] == "Terminated", status
        code, again = terminate(host, fleet["id"])
        assert code == 409, again  # already Terminated
    finally:
        memory.script.job_release.set()
    # The canceled jobs' events reach the host (and are ignored) before it stops.
    sent = lambda: {n for n, _ in memory.events_sent} >= {naming.job_name(b) for b in batches}  # noqa: E731
    wait_until(sent, "the canceled jobs sent no event")


def terminate(host: Any, instance_id: str, reason: str | None = None) -> tuple[int, Any]:
    url = HostClient(host.url, host.function_key).url(f"/api/retrain/{instance_id}/terminate")
    return http_json("POST", url + (f"&reason={reason.replace(' ', '+')}" if reason else ""))


def _run(coro: Any) -> Any:
    """On the host's functions loop (the Durable SDK's HTTP session belongs to it)."""
    return _LoopThread.run(coro, timeout=60)


def test_the_one_way_in_makes_one_fleet_of_concurrent_starts_and_finds_a_weeks_fleet(host, memory):
    client = df.DurableOrchestrationClient(host.urls.client_binding_json())
    memory.script.job_seconds, memory.script.job_release = 60.0, threading.Event()
    try:

        async def two_at_once() -> list[cycle_start.StartResult]:
            return list(
                await asyncio.gather(
                    cycle_start.start_fleet(client, ["MSFT", "AAPL"], "http"),
                    cycle_start.start_fleet(client, ["AAPL", "MSFT"], "http"),
                )
            )

        first, second = sorted(_run(two_at_once()), key=lambda r: not r.started)
        assert first.started and first.fleet and not first.skipped, first
        assert not second.started and second.instance_id is None
        assert second.skipped == {"AAPL": first.instance_id, "MSFT": first.instance_id}
        assert second.refused and "every ticker of the fleet" in second.refused
        one = _run(cycle_start.start_fleet(client, ["AAPL"], "http"))  # a fleet of one
        assert not one.started and one.skipped == {"AAPL": first.instance_id}, one
        assert one.refused == f"AAPL is already being retrained by {first.instance_id}"
        weekly = "fleet-2026w01"
        found = _run(cycle_start.start_fleet(client, ["IBM"], "timer", instance_id=weekly))
        assert found.started and found.instance_id == weekly, found
        again = _run(cycle_start.start_fleet(client, ["XOM"], "timer", instance_id=weekly))
        assert again.existing and not again.started and again.instance_id == weekly, again
    finally:
        memory.script.job_release.set()
    for instance_id in (first.instance_id, weekly):
        assert wait(host, str(instance_id))["runtime_status"] == "Completed"


def test_retrain_run_with_tickers_follows_the_fleet_per_batch_and_prints_its_outcome_last(
    host, memory, monkeypatch, tmp_path, capsys
):
    """`retrain run --tickers @FILE` joins the host running on the state dir (as it joins `retrain serve`),
    starts the fleet through POST /api/retrain, shows a line per batch on stderr (not a terminal) and prints
    the fleet's outcome as its last stdout line; `--ticker` does the same with a fleet of one."""
    from retrain.cli import main

    monkeypatch.setenv("RETRAIN_TRAINING_BATCH", "1")
    (tmp_path / "tickers.txt").write_text("msft\n# a comment\nAAPL\n")
    monkeypatch.chdir(tmp_path)
    code = main(["run", "--tickers", "@tickers.txt", "--trainer", "ridge", "--state-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    outcome = json.loads(out.strip().splitlines()[-1])
    assert code == 0, err[-3000:]
    assert outcome["runtime_status"] == "Completed" and outcome["status"] == "completed", outcome
    assert {t: o["status"] for t, o in outcome["tickers"].items()} == {"MSFT": "deployed", "AAPL": "deployed"}
    assert len(outcome["batches"]) == 2 and set(outcome) >= {"endpoints", "counts", "timings_s", "elapsed_s"}
    assert "batches 0/2" in err and "batches 2/2 [########################]" in err, err[-3000:]
    assert "\r" not in err  # not a terminal: plain lines
    # `--ticker` is a fleet of one: the same outcome's shape, plus its prediction (or why there is none);
    # a failed ticker makes `run` exit 1 although the fleet completed.
    memory.script.failing_fits = {"MSFT"}
    code = main(["run", "--ticker", "msft", "--trainer", "ridge", "--state-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    one = json.loads(out.strip().splitlines()[-1])
    assert code == 1 and one["runtime_status"] == "Completed" and list(one["tickers"]) == ["MSFT"], one
    assert (
        one["tickers"]["MSFT"]["status"] == "failed"
        and "scripted fit failure" in one["tickers"]["MSFT"]["error"]
    )
    assert one["counts"]["failed"] == 1 and one["prediction"]["ticker"] == "MSFT", one
    assert main(["run", "--tickers", "MSFT", "--ticker", "MSFT", "--state-dir", str(tmp_path)]) == 2
    assert main(["run", "--tickers", "@missing.txt", "--state-dir", str(tmp_path)]) == 2
    assert "--tickers=@missing.txt: no such file" in capsys.readouterr().err
