"""The MLflow pyfunc wrapper that serves the forecaster.

Input: a DataFrame with float columns c0..c{window-1} (closes, oldest first, newest last), one row per
instance. Output: a DataFrame with one float column `forecast`, the next trading day's close.
The model directory carries this file, `forecast_net.py` and `forecast_features.py` (MLflow
`code_paths`), the weights and the fitted scaler, so it loads without `trainer/` on sys.path.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from forecast_features import ReturnScaler, window_log_returns
from forecast_net import LSTMForecaster

WEIGHTS_ARTIFACT = "weights"
CONFIG_ARTIFACT = "config"


def input_columns(window: int) -> list[str]:
    return [f"c{i}" for i in range(window)]


def forecast_from_closes(net: LSTMForecaster, scaler: ReturnScaler, closes: np.ndarray) -> np.ndarray:
    """(n, window) closes -> (n,) next-day close forecasts: last close * exp(predicted return)."""
    closes = np.asarray(closes, dtype=np.float64)
    if not np.isfinite(closes).all() or (closes <= 0).any():
        raise ValueError("every close must be a finite number greater than 0")
    scaled = scaler.transform(window_log_returns(closes))
    x = torch.as_tensor(scaled, dtype=torch.float32).unsqueeze(-1)
    if net.training:  # a served net is put in eval mode once, at load time
        net.eval()
    # inference_mode: no autograd bookkeeping at all (cheaper than no_grad on a one-window call).
    with torch.inference_mode():
        predicted = net(x).double().numpy()
    return closes[:, -1] * np.exp(scaler.inverse(predicted))


class ForecasterModel(mlflow.pyfunc.PythonModel):
    """Holds no state when pickled; weights and preprocessing are loaded from the artifacts."""

    def load_context(self, context: Any) -> None:
        with open(context.artifacts[CONFIG_ARTIFACT], encoding="utf-8") as fh:
            config = json.load(fh)
        self.window = int(config["window"])
        self.scaler = ReturnScaler.from_dict(config["scaler"])
        self.net = LSTMForecaster(
            hidden_size=int(config["hidden_size"]), num_layers=int(config["num_layers"])
        )
        self.net.load_state_dict(torch.load(context.artifacts[WEIGHTS_ARTIFACT], weights_only=True))
        self.net.eval()

    def forecast_from_closes(self, closes: np.ndarray) -> np.ndarray:
        """The model's numpy path, which predict() also uses: (n, window) closes, oldest first ->
        (n,) next-day closes. A scorer that has checked its input once can call this per request
        (through `PyFuncModel.unwrap_python_model()`) and skip the DataFrame round trip and MLflow's
        per-call schema enforcement."""
        closes = np.asarray(closes, dtype=np.float64)
        if closes.ndim != 2 or closes.shape[1] != self.window:
            raise ValueError(
                f"expected closes of shape (n, {self.window}) (one row per instance, oldest first), "
                f"got shape {closes.shape}"
            )
        return forecast_from_closes(self.net, self.scaler, closes)

    # No type hints on predict: MLflow would try to derive a signature from them; the saved model
    # carries an explicit one (c0..c{window-1} -> forecast).
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
        closes = model_input[columns].to_numpy(dtype=np.float64)
        forecast = self.forecast_from_closes(closes)
        return pd.DataFrame({"forecast": forecast.astype(np.float64)})
