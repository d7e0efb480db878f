"""The batch runner (trainer_kit/batch.py) as a job runs it: the job's code assembled by retrain.job_code
(the ridge folder plus the kit) in a temporary folder, run with `python -I` and no PYTHONPATH (the repository
is not importable), over three tickers of which the middle one has broken data."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from retrain.job_code import BATCH_RUNNER, assemble_job_code
from retrain.trainer_check import BATCH_BROKEN, BATCH_GOOD, _batch_inputs, sample_csv

REPO = Path(__file__).resolve().parents[2]


def test_a_batch_trains_each_ticker_and_a_broken_one_fails_alone(tmp_path: Path) -> None:
    code = assemble_job_code(REPO / "trainers" / "ridge", tmp_path / "code")
    inputs, output = tmp_path / "inputs", tmp_path / "outputs"
    _batch_inputs(inputs, sample_csv(tmp_path / "data"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("MLFLOW_")}
    done = subprocess.run(
        [sys.executable, "-I", str(code / BATCH_RUNNER), "--inputs", str(inputs), "--output", str(output)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"ok": 2, "failed": 1}

    summary = json.loads((output / "batch_summary.json").read_text())
    assert list(summary["tickers"]) == [BATCH_GOOD[0], BATCH_BROKEN, BATCH_GOOD[1]]  # the manifest's order
    broken = summary["tickers"][BATCH_BROKEN]
    assert broken["status"] == "failed" and "non-numeric Close" in broken["error"]
    assert f"{BATCH_BROKEN}: failed (non-numeric Close in " in done.stderr
    # Nothing half-written: the failed ticker leaves no folder, and no staging folder is left.
    assert sorted(p.name for p in output.iterdir() if p.is_dir() and p.name != "mlartifacts") == sorted(
        BATCH_GOOD
    )
    run_ids = {}
    for ticker in BATCH_GOOD:
        assert summary["tickers"][ticker]["status"] == "ok"
        folder = output / ticker
        assert (folder / "model" / "MLmodel").is_file()
        metrics = json.loads((folder / "metrics.json").read_text())
        assert summary["tickers"][ticker]["metrics"]["mae"] == metrics["mae"]
        assert len(json.loads((folder / "test_errors.json").read_text())["dates"]) > 0
        run = json.loads((folder / "run.json").read_text())
        assert run["fitted_data_end"] == (inputs / f"{ticker}.csv").read_text().splitlines()[-1][:10]
        run_ids[ticker] = run["run_id"]

    # One MLflow run per ticker, tagged with it and nested under the batch's run.
    with sqlite3.connect(output / "mlflow.db") as db:
        tags = dict.fromkeys(run_ids.values())
        for run_id in run_ids.values():
            tags[run_id] = dict(db.execute("select key, value from tags where run_uuid = ?", (run_id,)))
        parents = {t["mlflow.parentRunId"] for t in tags.values()}
        assert {tags[run_ids[t]]["ticker"] for t in BATCH_GOOD} == set(BATCH_GOOD)
        [parent] = parents
        batch_tags = dict(db.execute("select key, value from tags where run_uuid = ?", (parent,)))
    assert batch_tags["batch_tickers"] == ",".join([BATCH_GOOD[0], BATCH_BROKEN, BATCH_GOOD[1]])
