"""Bring your own model, end to end and offline: a full cycle with the ridge trainer (picked by the
RETRAIN_TRAINER setting) deploys the first model; then an LSTM cycle (picked by `--trainer`, with a
`--param`) is gated against that ridge champion on the same test days and rolled out through the same
scoring URL. Everything real: local host, HTTP trigger, durable orchestration, LocalPlatform, trainer
subprocesses, MLflow registry, azmlinfsrv slots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _run(state_dir: Path, cwd: Path, env: dict[str, str], *args: str) -> tuple[dict, str]:
    done = subprocess.run(
        [sys.executable, "-m", "retrain", "run", "--source", "sample", "--ticker", "MSFT"]
        + ["--lookback-days", "1500", "--state-dir", str(state_dir), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def _version_tags(state_dir: Path, version: str) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{state_dir / 'mlflow' / 'mlflow.db'}"
    return dict(
        MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version("msft-forecaster", version).tags
    )


def _last_date(csv: Path) -> str:
    import pandas as pd

    return str(pd.read_csv(csv)["Date"].iloc[-1])[:10]


def _served_mae(model_dir: Path, csv: Path, test_errors: dict) -> float:
    """The MAE of a saved model on the days of `test_errors`, each from the window of closes before it."""
    import mlflow.pyfunc
    import numpy as np
    import pandas as pd

    model = mlflow.pyfunc.load_model(str(model_dir))
    window = int(model.metadata.metadata["window"])
    prices = pd.read_csv(csv)
    day = {d: i for i, d in enumerate(prices["Date"].astype(str).str[:10])}
    closes = prices["Close"].to_numpy(dtype=float)
    rows = np.stack([closes[day[d] - window : day[d]] for d in test_errors["dates"]])
    forecast = model.predict(pd.DataFrame(rows, columns=[f"c{i}" for i in range(window)]))["forecast"]
    return float(np.mean(np.abs(forecast.to_numpy() - np.asarray(test_errors["actual"]))))


def test_a_ridge_champion_is_challenged_by_an_lstm_through_the_same_cycle(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETRAIN_", "MLFLOW_"))}
    env["RETRAIN_SMOKE_MAX_LATENCY_MS"] = "10000"  # a busy CI machine: the bound is not what is tested here

    # 1. The ridge family through the setting: the first model, deployed on the baseline check alone.
    ridge, _ = _run(state_dir, tmp_path, {**env, "RETRAIN_TRAINER": "ridge"})
    assert ridge["status"] == "deployed" and ridge["model_version"] == "1", ridge
    assert any(r.startswith("baseline check passed: mae") for r in ridge["gate"]["reasons"])
    tags = _version_tags(state_dir, "1")
    assert (tags["trainer"], tags["model_family"], tags["gate_decision"]) == ("ridge", "ridge", "deploy")
    assert ridge["prediction"]["model"]["version"] == "1"
    job = json.loads((state_dir / "jobs" / ridge["job_name"] / "job.json").read_text())
    assert job["command"][1].endswith("code/ridge/train.py") and "--param" not in job["command"]
    # The registered model was refitted through the data end of its data asset (the job's --data).
    data_csv = Path(job["command"][job["command"].index("--data") + 1])
    data_end = _last_date(data_csv)
    assert tags["fitted_data_end"] == data_end, tags
    ridge_errors = json.loads(
        (state_dir / "jobs" / ridge["job_name"] / "outputs" / "test_errors.json").read_text()
    )
    assert tags["evaluation_fit_end"] < ridge_errors["dates"][0]  # evaluated on days it had not seen

    # 2. An LSTM challenger via --trainer and --param: gated against the ridge champion on the same days.
    lstm, stderr = _run(state_dir, tmp_path, env, "--trainer", "lstm", "--param", "max_epochs=2", "--force")
    assert lstm["model_version"] == "2" and lstm["status"] == "deployed", lstm
    reasons = lstm["gate"]["reasons"]
    [champion_reason] = [r for r in reasons if r.startswith("champion check")]
    assert "champion_mae" in champion_reason and lstm["gate"]["forced"] is True
    tags = _version_tags(state_dir, "2")
    assert (tags["trainer"], tags["model_family"]) == ("lstm", "lstm")
    assert tags["fitted_data_end"] == data_end, tags  # the same data asset: the same data end
    challenger_job = json.loads((state_dir / "jobs" / lstm["job_name"] / "job.json").read_text())
    assert challenger_job["command"][1].endswith("code/trainer/train.py")
    assert challenger_job["command"][-4:-2] == ["--param", "max_epochs=2"]
    assert challenger_job["command"][-2] == "--champion-model"  # the ridge champion's model, fetched
    # The champion_mae the LSTM trainer reported is the SERVED ridge model's error on the same test days
    # (the refit, which has seen those days: docs/trainer-contract.md), not its evaluation MAE.
    ridge_mae = _served_mae(
        state_dir / "jobs" / ridge["job_name"] / "outputs" / "model", data_csv, ridge_errors
    )
    assert f"champion_mae {ridge_mae:.6g}" in champion_reason, (champion_reason, ridge_mae)
    assert len(ridge_errors["dates"]) > 100
    # The same scoring URL now serves the LSTM (blue/green swap): the endpoint's next bundle, one
    # environment loading both families.
    assert lstm["scoring_uri"] == ridge["scoring_uri"]
    assert lstm["prediction"]["model"]["version"] == "2" and (ridge["slot"], lstm["slot"]) == (
        "blue",
        "green",
    )
    assert (ridge["bundle"]["version"], lstm["bundle"]["version"]) == ("1", "2"), (ridge, lstm)
    assert lstm["prediction"]["bundle"] == lstm["bundle"]
