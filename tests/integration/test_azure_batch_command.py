"""The command an Azure ML batch job runs, run for real here: the command line the adapter submits
(retrain.azureml.entities.batch_training_job), with its `${{inputs.*}}` and `${{outputs.output}}` replaced by
paths as Azure ML mounts them (one folder per input), run by bash in the assembled job code with no
PYTHONPATH and no MLflow settings. The staging step and the batch runner together must train the batch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from retrain.azureml import entities
from retrain.job_code import assemble_job_code
from retrain.ports import BatchTrainingRequest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_the_submitted_command_stages_the_inputs_and_trains_the_batch(
    tmp_path: Path, sample_csv: Path
) -> None:
    mounts = tmp_path / "mnt"
    frame = pd.read_csv(sample_csv).tail(400)
    paths = {}
    for i, ticker in enumerate(("EURUSD=X", "BAD")):
        folder = mounts / f"INPUT_data_{i}"
        folder.mkdir(parents=True)
        rows = frame.assign(Close="n/a") if ticker == "BAD" else frame
        rows.to_csv(folder / f"{ticker.lower()}-daily.csv", index=False)
        paths[f"inputs.data_{i}"] = str(folder / f"{ticker.lower()}-daily.csv")
    output = tmp_path / "outputs" / "output"
    paths["outputs.output"] = str(output)
    request = BatchTrainingRequest(
        job_name="fleet-x-b0000-train",
        experiment_name="fleet-ridge",
        instance_id="fleet-x-b0000",
        code_version="0.1.0",
        entries=[
            {"ticker": t, "data": {"name": f"{t.lower()}-daily", "version": "1", "uri": "", "tags": {}}}
            for t in ("EURUSD=X", "BAD")
        ],
        hyperparameters={"alpha": 1.0},
        trainer="ridge",
    )
    code = assemble_job_code(REPO / "trainers" / "ridge", tmp_path / "code")
    job = entities.batch_training_job(request, "cpu-cluster", code, REPO)
    command = re.sub(r"\$\{\{(inputs\.param_alpha)\}\}", "1.0", job.command)
    command = re.sub(r"\$\{\{([a-z_.0-9]+)\}\}", lambda m: paths[m.group(1)], command)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("MLFLOW_")}
    # `python` is the job environment's interpreter: here the one running the tests.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        ["bash", "-c", command], cwd=code, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((output / "batch_summary.json").read_text())
    assert (summary["ok"], summary["failed"]) == (1, 1)
    assert summary["tickers"]["BAD"]["status"] == "failed"
    assert (output / "EURUSD=X" / "model" / "MLmodel").is_file()
    staged = json.loads((code / entities.BATCH_INPUTS_DIR / "batch.json").read_text())
    assert [e["ticker"] for e in staged["tickers"]] == ["EURUSD=X", "BAD"]
