"""The trainer's per-day test forecasts (`test_errors.json`): what the gate's significance test reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainer_kit import contract
from trainer_kit.data import load_series, windows
from trainer_kit.params import TrainerError

pytestmark = pytest.mark.slow


def test_test_errors_json_has_one_entry_per_test_day_and_reproduces_the_metrics(
    trained_model: Path, sample_csv: Path
) -> None:
    errors = json.loads((trained_model / "test_errors.json").read_text())
    metrics = json.loads((trained_model / "metrics.json").read_text())
    assert set(errors) == {"dates", "actual", "model", "naive", "champion"}
    assert errors["champion"] is None  # no champion was given
    n = metrics["n_test"]
    assert all(len(errors[k]) == n for k in ("dates", "actual", "model", "naive"))
    # The test target days are the snapshot's last n days, with their real dates and closes.
    frame = pd.read_csv(sample_csv)
    assert errors["dates"] == frame["Date"].tail(n).tolist()
    assert errors["actual"] == pytest.approx(frame["Close"].tail(n).tolist())
    assert errors["naive"] == pytest.approx(frame["Close"].iloc[-n - 1 : -1].tolist())
    actual, model, naive = (np.array(errors[k]) for k in ("actual", "model", "naive"))
    assert np.mean(np.abs(model - actual)) == pytest.approx(metrics["mae"], rel=1e-9)
    assert np.mean(np.abs(naive - actual)) == pytest.approx(metrics["naive_mae"], rel=1e-9)


def test_test_errors_json_is_an_mlflow_artifact_of_the_run(trained_model: Path) -> None:
    from mlflow.tracking import MlflowClient

    run_id = json.loads((trained_model / "run.json").read_text())["run_id"]
    client = MlflowClient(tracking_uri=f"sqlite:///{trained_model / 'mlflow.db'}")
    assert "test_errors.json" in {a.path for a in client.list_artifacts(run_id)}


def test_champion_forecast_is_on_the_test_days_and_the_payload_checks_lengths(
    trained_model: Path, sample_csv: Path
) -> None:
    data = windows(load_series(sample_csv).closes, 20)
    days = data.target_days(data.test)
    forecast = contract.champion_forecast(str(trained_model / "model"), data.closes, days)
    assert forecast.shape == days.shape and np.isfinite(forecast).all()
    payload = contract.test_errors_payload(["d"] * days.size, data.closes[days], forecast, forecast, forecast)
    assert payload["champion"] == pytest.approx(forecast.tolist())
    with pytest.raises(TrainerError, match="one value per test day"):
        contract.test_errors_payload(["d"], data.closes[days], forecast, forecast, None)
