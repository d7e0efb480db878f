"""End to end, offline, everything real: `retrain run` (local host, HTTP trigger, durable orchestration,
trainer subprocess, MLflow registry, Event Grid webhook, azmlinfsrv slots) on the bundled sample with
short training; then `retrain serve` brings the endpoint back and the stable scoring URL answers; then
everything is stopped by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from retrain.local.processes import process_alive
from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[2]


def _score(url: str, closes: list[float]) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps({"close": closes}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _slot_pids(state_dir: Path) -> list[tuple[int, int | None]]:
    pids = []
    for state_file in state_dir.glob("endpoints/*/state.json"):
        state = json.loads(state_file.read_text())
        # A detached router first: it restarts crashed slots, so it goes before them.
        for info in [*([state["router"]] if "router" in state else []), *state.get("slots", {}).values()]:
            pids.append((info.get("pid"), info.get("start_ticks")))
    return pids


def test_full_offline_cycle_then_score_through_the_stable_url(tmp_path: Path):
    state_dir = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETRAIN_", "MLFLOW_"))}
    env["RETRAIN_SMOKE_MAX_LATENCY_MS"] = "10000"  # a busy CI machine: the bound is not what is tested here
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "retrain",
            "run",
            "--source",
            "sample",
            "--ticker",
            "MSFT",
            "--max-epochs",
            "2",
            "--lookback-days",
            "1500",
            "--state-dir",
            str(state_dir),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])  # the contract: the LAST stdout line
    # A fleet of one: the fleet's outcome, its one ticker's entry, and the prediction through the stable URL.
    assert summary["status"] == "completed" and summary["runtime_status"] == "Completed", summary
    assert summary["instance_id"].startswith("fleet-") and list(summary["tickers"]) == ["MSFT"], summary
    msft = summary["tickers"]["MSFT"]
    assert msft["status"] == "deployed" and msft["model_version"] == "1" and msft["gate"], msft
    assert msft["data_version"] and summary["batches"][0]["job_name"].endswith("-train"), summary
    prediction = summary["prediction"]
    assert prediction["scoring_uri"].startswith("http://127.0.0.1:"), prediction
    assert 0.5 * prediction["last_close"] < prediction["forecast"] < 2 * prediction["last_close"]
    assert set(summary["timings_s"]) == {"guard", "batches", "await_rollout"}, summary["timings_s"]
    assert "batches 1/1" in run.stderr and "deployed 1" in run.stderr  # progress printed as it happened
    # The default layout: the shared endpoint's rollout deployed a bundle of one to its first slot.
    assert msft["endpoint"] == "fleet-models" and msft["slot"] == "blue", summary
    assert (msft["bundle"], msft["bundle_version"]) == ("fleet-models-bundle", "1"), summary
    assert msft["rollout"].startswith("rollout-fleet-models-"), summary
    assert summary["endpoints"] == {"fleet-models": prediction["scoring_uri"]}, summary
    assert prediction["bundle"] == {"name": "fleet-models-bundle", "version": "1"}, summary
    assert prediction["model"]["name"] == "msft-forecaster", summary
    # `run` stops the slots it started.
    assert _slot_pids(state_dir) and not any(process_alive(p, t) for p, t in _slot_pids(state_dir))

    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "retrain",
            "serve",
            "--port",
            str(free_port()),
            "--state-dir",
            str(state_dir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        closes = [float(c) for c in range(100, 130)]
        deadline = time.monotonic() + 180
        answer = None
        while answer is None:
            assert serve.poll() is None, serve.stderr.read()[-3000:] if serve.stderr else ""
            try:
                answer = _score(prediction["scoring_uri"], closes)
            except OSError:
                assert time.monotonic() < deadline, (
                    "the stable scoring URL did not come back under `retrain serve`"
                )
                time.sleep(0.5)
        assert answer["model"]["name"] == "msft-forecaster" and answer["model"]["version"] == "1"
        assert len(answer["forecast"]) == 1 and 50 < answer["forecast"][0] < 200
    finally:
        os.kill(serve.pid, signal.SIGTERM)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
        for pid, ticks in _slot_pids(state_dir):  # nothing may outlive the test
            if process_alive(pid, ticks):
                os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10  # SIGKILL is delivered, not waited for
        while any(process_alive(p, t) for p, t in _slot_pids(state_dir)) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not any(process_alive(p, t) for p, t in _slot_pids(state_dir))
