"""The MLflow pyfunc wrapper that serves the gradient-boosting forecaster (numpy and pandas only).

Input: a DataFrame with float columns c0..c{window-1} (closes, oldest first, newest last), one row per
instance. Output: a DataFrame with one float column `forecast`, the next trading day's close.
The fitted ensemble is plain arrays (`params.json`: window, return mean/std, the initial value, the
learning rate and each tree's feature/threshold/children/value), evaluated here with numpy, so the served
model needs neither scikit-learn nor this trainer folder (MLflow `code_paths` carries this file).
"""

from __future__ import annotations

import json
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

PARAMS_ARTIFACT = "params"


def input_columns(window: int) -> list[str]:
    return [f"c{i}" for i in range(window)]


def lagged_returns(closes: np.ndarray) -> np.ndarray:
    """(n, window) closes -> (n, window - 1) daily log returns, oldest first."""
    closes = np.asarray(closes, dtype=np.float64)
    if closes.ndim != 2 or closes.shape[1] < 2:
        raise ValueError(f"expected (n, window >= 2) closes, got shape {closes.shape}")
    return np.diff(np.log(closes), axis=1)


def tree_values(tree: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """One regression tree's value for each row of `x` (scikit-learn's layout: a leaf has left == -1;
    a row goes left when its feature is <= the threshold)."""
    feature = np.asarray(tree["feature"], dtype=np.int64)
    threshold = np.asarray(tree["threshold"], dtype=np.float64)
    left = np.asarray(tree["left"], dtype=np.int64)
    right = np.asarray(tree["right"], dtype=np.int64)
    value = np.asarray(tree["value"], dtype=np.float64)
    rows = np.arange(len(x))
    node = np.zeros(len(x), dtype=np.int64)
    for _ in range(int(tree["depth"])):
        leaf = left[node] == -1
        goes_left = x[rows, np.where(leaf, 0, feature[node])] <= threshold[node]
        node = np.where(leaf, node, np.where(goes_left, left[node], right[node]))
    return value[node]


def forecast_from_closes(params: dict[str, Any], closes: np.ndarray) -> np.ndarray:
    """(n, window) closes -> (n,) next closes: last close * exp(predicted next log return)."""
    closes = np.asarray(closes, dtype=np.float64)
    if not np.isfinite(closes).all() or (closes <= 0).any():
        raise ValueError("every close must be a finite number greater than 0")
    mean, std = float(params["mean"]), float(params["std"])
    x = (lagged_returns(closes) - mean) / std
    z = np.full(len(x), float(params["init"]))
    for tree in params["trees"]:
        z += float(params["learning_rate"]) * tree_values(tree, x)
    return closes[:, -1] * np.exp(z * std + mean)


class GbrForecasterModel(mlflow.pyfunc.PythonModel):
    """Holds no state when pickled; the ensemble is loaded from the `params` artifact."""

    def load_context(self, context: Any) -> None:
        with open(context.artifacts[PARAMS_ARTIFACT], encoding="utf-8") as fh:
            self.params = json.load(fh)
        self.window = int(self.params["window"])

    def forecast_from_closes(self, closes: np.ndarray) -> np.ndarray:
        """The scorer's numpy path (it checks once at init that this answers as predict() does)."""
        return forecast_from_closes(self.params, closes)

    # No type hints on predict: MLflow would derive a signature from them; the model carries its own.
    def predict(self, context, model_input, params=None):
        columns = input_columns(self.window)
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(np.asarray(model_input, dtype=np.float64), columns=columns)
        missing = [c for c in columns if c not in model_input.columns]
        if missing:
            raise ValueError(
                f"input needs the {self.window} close columns {columns[0]}..{columns[-1]} (oldest first); "
                f"missing: {', '.join(missing[:5])}"
            )
        forecast = forecast_from_closes(self.params, model_input[columns].to_numpy(dtype=np.float64))
        return pd.DataFrame({"forecast": forecast.astype(np.float64)})
