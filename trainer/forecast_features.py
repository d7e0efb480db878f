"""Return-space features shared by training and the served model (numpy only).

A window of `w` closes becomes `w - 1` log returns; the target is the next day's log return. Returns do
not depend on the price level, so a model trained on one price range still applies after the price
drifts. The scaler standardises returns with statistics fitted on training rows only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def window_log_returns(closes: np.ndarray) -> np.ndarray:
    """Log returns inside each window: (n, w) closes -> (n, w - 1) returns, oldest first."""
    closes = np.asarray(closes, dtype=np.float64)
    if closes.ndim != 2 or closes.shape[1] < 2:
        raise ValueError(
            f"expected a 2-D array of windows with at least 2 closes each, got shape {closes.shape}"
        )
    return np.diff(np.log(closes), axis=1)


@dataclass(frozen=True)
class ReturnScaler:
    """Standardises daily log returns: z = (r - mean) / std."""

    mean: float
    std: float

    @classmethod
    def fit(cls, closes: np.ndarray) -> ReturnScaler:
        """Fit on a 1-D series of closes (pass only the training span)."""
        returns = np.diff(np.log(np.asarray(closes, dtype=np.float64)))
        if returns.size < 2:
            raise ValueError("need at least 3 closes to fit the return scaler")
        std = float(returns.std())
        # A constant series has no spread; fall back to 1 so transform stays finite.
        return cls(mean=float(returns.mean()), std=std if std > 0 else 1.0)

    def transform(self, returns: np.ndarray) -> np.ndarray:
        return (np.asarray(returns, dtype=np.float64) - self.mean) / self.std

    def inverse(self, scaled: np.ndarray) -> np.ndarray:
        return np.asarray(scaled, dtype=np.float64) * self.std + self.mean

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> ReturnScaler:
        return cls(mean=float(data["mean"]), std=float(data["std"]))
