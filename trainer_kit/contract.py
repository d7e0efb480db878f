"""The model's input contract and the test measurements every family reports (docs/trainer-contract.md).

A served model takes columns `c0 .. c{window-1}` (double: the last `window` closes, oldest first) and
answers one column `forecast` (the next close). The test metrics compare, on each test target day, the
evaluation model's forecast with the actual close and with persistence (naive: the previous close), and,
given a champion, the champion's forecast for the SAME days from its own window of the full series.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from trainer_kit.params import TrainerError


def input_columns(window: int) -> list[str]:
    return [f"c{i}" for i in range(window)]


def frame(inputs: np.ndarray) -> Any:
    """(n, window) closes -> the DataFrame a served model takes."""
    import pandas as pd

    inputs = np.asarray(inputs, dtype=np.float64)
    return pd.DataFrame(inputs, columns=input_columns(inputs.shape[1]))


def signature(window: int) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("double", c) for c in input_columns(window)]),
        outputs=Schema([ColSpec("double", "forecast")]),
    )


def windows_before(closes: np.ndarray, days: np.ndarray, window: int) -> np.ndarray:
    """(len(days), window): for each target day, the `window` closes before it."""
    return np.stack([closes[d - window : d] for d in days])


def price_metrics(forecast: np.ndarray, actual: np.ndarray, previous: np.ndarray) -> dict[str, float]:
    """Test metrics in price space; the naive baseline is persistence (tomorrow's close = today's)."""
    forecast, actual, previous = (np.asarray(a, dtype=np.float64) for a in (forecast, actual, previous))
    error = forecast - actual
    mae = float(np.mean(np.abs(error)))
    naive_mae = float(np.mean(np.abs(previous - actual)))
    return {
        "mae": mae,
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mape": float(np.mean(np.abs(error) / actual) * 100.0),  # percent
        "naive_mae": naive_mae,
        "mae_vs_naive": mae / naive_mae if naive_mae > 0 else math.inf,
    }


def champion_forecast(champion_uri: str, closes: np.ndarray, days: np.ndarray) -> np.ndarray:
    """The champion's next-close forecasts for the test target days `days` (positions in `closes`),
    whatever its family or window: its inputs come from the full series, so it is compared day for day."""
    import mlflow.pyfunc

    try:
        champion = mlflow.pyfunc.load_model(champion_uri)
    except Exception as exc:
        raise TrainerError(f"cannot load the champion model {champion_uri!r}: {exc}") from exc
    try:
        window = int((champion.metadata.metadata or {})["window"])
    except (KeyError, TypeError, ValueError) as exc:
        raise TrainerError(
            f"champion model {champion_uri!r} has no integer 'window' in its metadata"
        ) from exc
    if days[0] - window < 0:
        raise TrainerError(
            f"champion window {window} needs {window} closes before the first test day; the data has {days[0]}"
        )
    predicted = champion.predict(frame(windows_before(closes, days, window)))
    values = predicted["forecast"] if hasattr(predicted, "columns") else predicted
    return np.asarray(values, dtype=np.float64).reshape(-1)


def test_errors_payload(
    dates: list[str],
    actual: np.ndarray,
    model: np.ndarray,
    naive: np.ndarray,
    champion: np.ndarray | None,
) -> dict[str, Any]:
    """`test_errors.json`: the next-close values on each test target day, so the gate can test whether the
    per-day errors differ significantly (and the monitor can use them as its reference)."""

    def listed(a: np.ndarray) -> list[float]:
        return [float(v) for v in np.asarray(a, dtype=np.float64).reshape(-1)]

    payload: dict[str, Any] = {
        "dates": list(dates),
        "actual": listed(actual),
        "model": listed(model),
        "naive": listed(naive),
        "champion": listed(champion) if champion is not None else None,
    }
    lengths = {k: len(v) for k, v in payload.items() if v is not None}
    if len(set(lengths.values())) != 1:
        raise TrainerError(f"test_errors.json needs one value per test day in every list, got {lengths}")
    return payload
