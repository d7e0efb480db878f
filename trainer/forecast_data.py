"""The LSTM's data: the kit's windows and split (trainer_kit/data.py) in return space (numpy only).

Sample k uses the closes at days k .. k+window-1 as input and the close at day k+window (the NEXT
trading day, t+1) as target. Samples are split in time order: the first 70 % train, the next 15 %
validate, the last 15 % test; nothing is shuffled across those boundaries. The return scaler is fitted on
the training span only (on the whole series for the refit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from forecast_features import ReturnScaler, window_log_returns

# The data asset's reading and the chronological split are the trainer kit's (every family's).
from trainer_kit.data import SplitSizes, TrainingDataError, check_enough_rows


def window_closes(closes: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (inputs (n, window) closes, targets (n,) next-day closes) with n = len(closes) - window."""
    closes = np.asarray(closes, dtype=np.float64)
    n = len(closes) - window
    if n <= 0:
        raise TrainingDataError(f"need more than {window} closes for window {window}, got {len(closes)}")
    inputs = np.lib.stride_tricks.sliding_window_view(closes, window)[:n].copy()
    return inputs, closes[window:].copy()


def training_span(sizes: SplitSizes, window: int) -> slice:
    """The closes that training samples touch (inputs and targets); the scaler is fitted on these only."""
    return slice(0, sizes.train + window)


def fit_scaler(closes: np.ndarray, sizes: SplitSizes, window: int) -> ReturnScaler:
    return ReturnScaler.fit(np.asarray(closes)[training_span(sizes, window)])


@dataclass(frozen=True)
class PreparedData:
    """Everything the training loop needs, in return space, split in time order."""

    closes: np.ndarray  # the whole series
    window: int
    sizes: SplitSizes
    scaler: ReturnScaler
    x: np.ndarray  # (n, window - 1) standardised input returns
    y: np.ndarray  # (n,) standardised next-day return
    input_closes: np.ndarray  # (n, window)
    target_closes: np.ndarray  # (n,)

    def part(self, name: str) -> slice:
        start = {"train": 0, "val": self.sizes.train, "test": self.sizes.train + self.sizes.val}[name]
        length = getattr(self.sizes, name)
        return slice(start, start + length)

    def target_day_index(self, name: str) -> np.ndarray:
        """Positions in `closes` of the target days of one part (sample k targets day k + window)."""
        s = self.part(name)
        return np.arange(s.start, s.stop) + self.window


def prepare(closes: np.ndarray, window: int) -> PreparedData:
    sizes = check_enough_rows(len(closes), window)
    return _prepared(closes, window, sizes)


def prepare_refit(closes: np.ndarray, window: int) -> PreparedData:
    """Every window is a training window (no validation or test part) and the scaler is fitted on the
    whole series: the data of the refit that serves after the evaluation (docs/trainer-contract.md)."""
    check_enough_rows(len(closes), window)  # the same refusal as the evaluation's
    return _prepared(closes, window, SplitSizes(train=len(closes) - window, val=0, test=0))


def _prepared(closes: np.ndarray, window: int, sizes: SplitSizes) -> PreparedData:
    scaler = fit_scaler(closes, sizes, window)
    inputs, targets = window_closes(closes, window)
    x = scaler.transform(window_log_returns(inputs))
    y = scaler.transform(np.log(targets / inputs[:, -1]))
    return PreparedData(closes, window, sizes, scaler, x, y, inputs, targets)
