"""SIGKILL of `retrain serve` in the middle of a fleet cycle (issue 22, done when): the host dies without a
goodbye while the fleet's batches train (the first batch trained and registered, the second's job running;
the job outlives the host); `retrain serve`
started again on the same state dir finishes the fleet: every ticker has its outcome, each batch ran ONE
training job, and MLflow holds one model version per ticker (no duplicate registration).
Real processes on 127.0.0.1 (the host, each batch's job runner, the endpoint's slots), stopped by PID."""

from __future__ import annotations

import json
import os
import signal
import urllib.parse
from pathlib import Path
from typing import Any

from retrain import naming
from retrain.host_client import http_json, with_code
from retrain.local.processes import tail
from tests.helpers import (
    background,
    free_port,
    kill_leftovers,
    offline_env,
    random_walk,
    wait_for,
    write_price_csv,
)

TICKERS = ["KA", "KB", "KC", "KD"]  # two batches of two, one at a time: the kill lands between them
TERMINAL = ("Completed", "Failed", "Terminated")


def _status(url: str) -> dict[str, Any] | None:
    code, status = http_json("GET", url)  # GET /api/retrain/{id}: 404 until the instance is visible
    return status if code == 200 and isinstance(status, dict) else None


def test_serve_killed_while_a_fleets_batches_train_finishes_it_after_a_restart(tmp_path: Path) -> None:
    data_dir, state_dir = tmp_path / "prices", tmp_path / "state"
    data_dir.mkdir()
    for i, ticker in enumerate(TICKERS):
        write_price_csv(data_dir / f"{ticker}.csv", random_walk(200 + i))
    env = offline_env(
        RETRAIN_DATA_DIR=str(data_dir),
        RETRAIN_SOURCE="csv:{ticker}.csv",
        RETRAIN_TRAINER="ridge",
        RETRAIN_TRAINING_BATCH="2",
        RETRAIN_FLEET_PARALLEL_BATCHES="1",
        RETRAIN_JOB_POLL_MINUTES="0.05",  # 3 s: the poll covers a job event sent while the host was down
    )
    port = free_port()
    serve_args = ["serve", "--port", str(port), "--state-dir", str(state_dir)]
    base = f"http://127.0.0.1:{port}"
    keys_file = state_dir / "host" / "keys.json"
    try:
        with background(serve_args, env, tmp_path, tmp_path / "serve-1.log") as first:
            wait_for(
                "the host",
                lambda: http_json("GET", f"{base}/")[0] if keys_file.is_file() else None,
                120,
                first.problem,
            )
            key = json.loads(keys_file.read_text())["functionKey"]
            code, started = http_json(
                "POST", f"{base}/api/retrain?code={urllib.parse.quote(key)}", {"tickers": TICKERS}
            )
            assert code == 202, started
            fleet_id, status_url = started["id"], with_code(started["statusQueryGetUri"], key)

            second_job = state_dir / "jobs" / naming.job_name(naming.batch_instance_id(fleet_id, 1))

            def midway() -> dict[str, Any] | None:
                """The first batch done (trained, registered) and the second one's job training."""
                status = _status(status_url)
                if status and status["runtime_status"] in TERMINAL:
                    raise AssertionError(f"the fleet ended before the kill: {status}")
                if not (
                    status and status.get("batches_done") == 1 and (second_job / "status.json").is_file()
                ):
                    return None
                job = json.loads((second_job / "status.json").read_text())
                return job if job["status"] == "Running" else None

            wait_for("the second batch's job to train", midway, 300, first.problem)
            os.killpg(first.process.pid, signal.SIGKILL)  # the host dies mid-fleet, without a goodbye
            first.process.wait(timeout=30)

        with background(serve_args, env, tmp_path, tmp_path / "serve-2.log") as second:
            status = wait_for(
                "the resumed fleet to finish",
                lambda: (s := _status(status_url)) and s["runtime_status"] in TERMINAL and s or None,
                600,
                second.problem,
            )
            assert status["runtime_status"] == "Completed", json.dumps(status, indent=2)[-3000:]
        assert second.process.returncode == 0, tail(second.log)

        # No lost ticker: each has its outcome; the deployed ones went out in one rollout.
        out = status["output"]
        assert out["status"] == "completed" and list(out["tickers"]) == TICKERS, out
        outcomes = {t: o["status"] for t, o in out["tickers"].items()}
        assert set(outcomes.values()) <= {"deployed", "rejected"}, out["tickers"]
        assert len({o["rollout"] for o in out["tickers"].values() if o["status"] == "deployed"}) <= 1

        # One training job per batch, each run once; one model version per ticker in MLflow.
        batches = [naming.batch_instance_id(fleet_id, i) for i in range(2)]
        jobs = sorted(p.name for p in (state_dir / "jobs").iterdir())
        assert jobs == sorted(naming.job_name(b) for b in batches), jobs
        for job in jobs:
            history = json.loads((state_dir / "jobs" / job / "status.json").read_text())["history"]
            assert [h["status"] for h in history] == ["Queued", "Running", "Completed"], history
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{state_dir / 'mlflow' / 'mlflow.db'}")
        versions = {t: client.search_model_versions(f"name = '{naming.model_name(t)}'") for t in TICKERS}
        assert {t: [str(v.version) for v in vs] for t, vs in versions.items()} == {t: ["1"] for t in TICKERS}
        for ticker in TICKERS:
            assert out["tickers"][ticker]["model_version"] == "1"
    finally:
        kill_leftovers(state_dir)
