"""The trainer end to end on the bundled MSFT sample: outputs, the MLflow run, the model in a fresh
process, champion comparison, run resumption (MLFLOW_RUN_ID) and repeatability."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retrain.job_code import kit_pythonpath

REPO = Path(__file__).resolve().parents[2]
TRAINER = REPO / "trainer"
sys.path.insert(0, str(TRAINER))  # for the pure data helpers; the model itself is loaded elsewhere

from forecast_data import prepare  # noqa: E402

from trainer_kit import contract  # noqa: E402
from trainer_kit.data import load_series  # noqa: E402


def load_closes(path: Path) -> np.ndarray:
    return load_series(path).closes


pytestmark = pytest.mark.slow

METRIC_KEYS = ("mae", "rmse", "mape", "naive_mae", "mae_vs_naive", "n_train", "n_val", "n_test")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def train_cli(data: Path, out: Path, *extra: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TRAINER / "train.py"), "--data", str(data), "--output", str(out), *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=out.parent,
        timeout=600,
    )


def clean_env(**extra: str) -> dict[str, str]:
    """No MLflow settings; the trainer kit on PYTHONPATH, as a run from the repository folder needs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return {**env, "PYTHONPATH": kit_pythonpath(env.get("PYTHONPATH")), **extra}


def test_outputs_and_metrics(trained_model: Path, sample_csv: Path) -> None:
    metrics = read_json(trained_model / "metrics.json")
    for key in METRIC_KEYS:
        assert isinstance(metrics[key], int | float) and math.isfinite(metrics[key]), key
    n_rows = len(load_closes(sample_csv))
    assert metrics["n_train"] + metrics["n_val"] + metrics["n_test"] == n_rows - 20
    assert metrics["mae_vs_naive"] == pytest.approx(metrics["mae"] / metrics["naive_mae"])
    assert metrics["rmse"] >= metrics["mae"] > 0
    # A next-day forecast of a liquid stock lands near persistence; far off means a broken pipeline.
    assert 0.7 < metrics["mae_vs_naive"] < 1.5
    assert (trained_model / "forecast.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (trained_model / "model" / "MLmodel").is_file()
    assert "champion_mae" not in metrics


def test_mlflow_run_has_params_epoch_losses_and_artifacts(trained_model: Path) -> None:
    from mlflow.tracking import MlflowClient

    run_info = read_json(trained_model / "run.json")
    client = MlflowClient(tracking_uri=f"sqlite:///{trained_model / 'mlflow.db'}")
    run = client.get_run(run_info["run_id"])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert (params["window"], params["hidden_size"], params["max_epochs"], params["seed"]) == (
        "20",
        "32",
        "3",
        "42",
    )
    for name in ("train_loss", "val_loss"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [0, 1, 2], name
        assert all(math.isfinite(m.value) for m in history)
    metrics = read_json(trained_model / "metrics.json")
    assert run.data.metrics["mae"] == pytest.approx(metrics["mae"])
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model", "forecast.png", "metrics.json"} <= top
    in_model = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/MLmodel", "model/code", "model/artifacts"} <= in_model


FRESH_LOAD = textwrap.dedent(
    """
    import json, sys
    import pandas as pd
    assert not any(p.rstrip("/").endswith("/trainer") for p in sys.path), sys.path
    import mlflow.pyfunc
    model = mlflow.pyfunc.load_model(sys.argv[1])
    window = int(model.metadata.metadata["window"])
    rows = json.load(open(sys.argv[2]))
    frame = pd.DataFrame(rows, columns=[f"c{i}" for i in range(window)])
    out = model.predict(frame)
    print(json.dumps({"window": window, "target": model.metadata.metadata["target"],
                      "columns": list(out.columns), "forecast": out["forecast"].tolist(),
                      "code": sys.modules["forecast_net"].__file__}))
    """
)


def test_model_loads_and_predicts_in_a_fresh_process(
    trained_model: Path, sample_csv: Path, tmp_path: Path
) -> None:
    data = prepare(load_closes(sample_csv), window=20)
    test_inputs = data.input_closes[data.part("test")]
    (tmp_path / "rows.json").write_text(json.dumps(test_inputs.tolist()))
    (tmp_path / "load.py").write_text(FRESH_LOAD)
    env = clean_env()
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "load.py", str(trained_model / "model"), "rows.json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["window"] == 20 and answer["target"] == "next_close" and answer["columns"] == ["forecast"]
    assert answer["code"].startswith(str(trained_model / "model" / "code"))
    forecast = np.array(answer["forecast"])
    assert forecast.shape == (data.sizes.test,) and np.isfinite(forecast).all()
    # The served model is the refit (fitted through the data end, test days included), not the evaluation
    # model the metrics measure (refit=false serves that one: see the champion run below).
    run = read_json(trained_model / "run.json")
    assert (
        run["refit"] is True and run["fitted_data_end"] == str(pd.read_csv(sample_csv)["Date"].iloc[-1])[:10]
    )
    mae = float(np.mean(np.abs(forecast - data.target_closes[data.part("test")])))
    assert mae != pytest.approx(read_json(trained_model / "metrics.json")["mae"], rel=1e-9)


def test_champion_run_resumes_the_given_run_and_repeats_the_metrics(
    trained_model: Path, sample_csv: Path, tmp_path: Path
) -> None:
    """Second run, same seed and data, the first model as champion, inside a pre-created run (as an
    Azure ML job), without the refit: identical metrics (the evaluation does not depend on the refit);
    champion_mae is the first run's SERVED (refitted) model on the same days; and the second run's saved
    model, being its evaluation model, reproduces its own test mae."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'tracking.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("msft", artifact_location=(tmp_path / "artifacts").as_uri())
    job_run = client.create_run(experiment_id, tags={"orchestration_instance_id": "inst-1"})
    env = clean_env(MLFLOW_TRACKING_URI=uri, MLFLOW_RUN_ID=job_run.info.run_id)
    out = tmp_path / "second"
    champion = str(trained_model / "model")
    result = train_cli(
        sample_csv, out, "--max-epochs", "3", "--champion-model", champion, "--param", "refit=false", env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]

    first, second = read_json(trained_model / "metrics.json"), read_json(out / "metrics.json")
    for key in METRIC_KEYS:
        assert second[key] == pytest.approx(first[key], rel=1e-9), key
    import mlflow.pyfunc

    data = prepare(load_closes(sample_csv), window=20)
    test = data.part("test")
    frame = pd.DataFrame(data.input_closes[test], columns=[f"c{i}" for i in range(20)])

    def mae_of(model_dir: str) -> float:
        forecast = mlflow.pyfunc.load_model(model_dir).predict(frame)["forecast"].to_numpy()
        return float(np.mean(np.abs(forecast - data.target_closes[test])))

    assert second["champion_mae"] == pytest.approx(mae_of(champion), rel=1e-9)
    assert mae_of(str(out / "model")) == pytest.approx(second["mae"], rel=1e-9)  # refit=false: as measured
    ends = read_json(out / "run.json")
    assert ends["refit"] is False and ends["fitted_data_end"] == ends["evaluation_fit_end"]

    assert read_json(out / "run.json")["run_id"] == job_run.info.run_id
    run = client.get_run(job_run.info.run_id)
    assert run.data.tags["orchestration_instance_id"] == "inst-1"
    assert run.data.metrics["champion_mae"] == pytest.approx(second["champion_mae"])
    assert "model/MLmodel" in {a.path for a in client.list_artifacts(job_run.info.run_id, "model")}


def test_champion_with_another_window_is_scored_on_the_same_days(
    trained_model: Path, sample_csv: Path
) -> None:
    import mlflow.pyfunc
    import pandas as pd

    data = prepare(load_closes(sample_csv), window=10)  # challenger window 10, champion window 20
    test_days = data.target_day_index("test")
    forecast = contract.champion_forecast(str(trained_model / "model"), data.closes, test_days)
    got = np.mean(np.abs(forecast - data.closes[test_days]))

    closes = data.closes
    days = data.target_day_index("test")
    champion = mlflow.pyfunc.load_model(str(trained_model / "model"))
    frame = pd.DataFrame([closes[d - 20 : d] for d in days], columns=[f"c{i}" for i in range(20)])
    expected = np.mean(np.abs(champion.predict(frame)["forecast"].to_numpy() - closes[days]))
    assert got == pytest.approx(expected, rel=1e-12)


def test_runs_with_no_mlflow_environment(sample_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "bare"
    result = train_cli(sample_csv, out, "--max-epochs", "1", "--hidden-size", "4", env=clean_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "mlflow.db").is_file() and (out / "model" / "MLmodel").is_file()
    assert any((out / "mlartifacts").rglob("MLmodel"))
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()
    # Model versions are immutable: a second run into the same output is refused, not overwritten.
    again = train_cli(sample_csv, out, "--max-epochs", "1", env=clean_env())
    assert again.returncode != 0 and "already exists" in again.stderr
