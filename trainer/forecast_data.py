"""Loading the price CSV, windowing and the chronological split (numpy/pandas only).

Sample k uses the closes at days k .. k+window-1 as input and the close at day k+window (the NEXT
trading day, t+1) as target. Samples are split in time order: the first 70 % train, the next 15 %
validate, the last 15 % test; nothing is shuffled across those boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from forecast_features import ReturnScaler, window_log_returns

TRAIN_FRACTION = 0.70
VAL_FRACTION = 0.15
MIN_TRAIN_WINDOWS = 20
MIN_VAL_WINDOWS = 5
MIN_TEST_WINDOWS = 5


class TrainingDataError(ValueError):
    """The input data cannot be trained on; the message says why and what to send instead."""


def load_closes(path: Path | str) -> np.ndarray:
    """Read a CSV with a `Close` column (and optionally `Date`, ascending) -> 1-D float64 closes."""
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError(
            f"data file not found: {path} (pass --data with a CSV that has a Close column)"
        )
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TrainingDataError(
            f"cannot read {path} as CSV ({exc}); send a CSV with Date and Close columns"
        ) from exc
    if "Close" not in frame.columns:
        raise TrainingDataError(
            f"{path} has no Close column (columns: {', '.join(map(str, frame.columns))}); "
            "send a CSV with Date and Close columns"
        )
    close = pd.to_numeric(frame["Close"], errors="coerce")
    bad = close.isna() | ~np.isfinite(close.to_numpy(dtype=np.float64, na_value=np.nan))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise TrainingDataError(
            f"non-numeric Close in {path} at data row {row + 1} ({frame['Close'].iloc[row]!r}); "
            "every Close must be a finite number"
        )
    if (close <= 0).any():
        row = int(np.flatnonzero((close <= 0).to_numpy())[0])
        raise TrainingDataError(f"Close must be > 0; {path} has {close.iloc[row]} at data row {row + 1}")
    if "Date" in frame.columns:
        dates = pd.to_datetime(frame["Date"], errors="coerce")
        if dates.isna().any() or not dates.is_monotonic_increasing or dates.duplicated().any():
            raise TrainingDataError(
                f"Date in {path} must be valid, unique and ascending (oldest first); sort and de-duplicate the file"
            )
    return close.to_numpy(dtype=np.float64)


@dataclass(frozen=True)
class SplitSizes:
    train: int
    val: int
    test: int

    @property
    def total(self) -> int:
        return self.train + self.val + self.test


def split_sizes(n_windows: int) -> SplitSizes:
    """Chronological 70/15/15 split of `n_windows` samples (the test part takes the remainder)."""
    n_train = int(n_windows * TRAIN_FRACTION)
    n_val = int(n_windows * VAL_FRACTION)
    return SplitSizes(train=n_train, val=n_val, test=n_windows - n_train - n_val)


def min_rows(window: int) -> int:
    """The fewest closes that give every part of the split its minimum number of windows."""
    rows = window + 1
    while True:
        sizes = split_sizes(rows - window)
        if (
            sizes.train >= MIN_TRAIN_WINDOWS
            and sizes.val >= MIN_VAL_WINDOWS
            and sizes.test >= MIN_TEST_WINDOWS
        ):
            return rows
        rows += 1


def check_enough_rows(n_rows: int, window: int) -> SplitSizes:
    if window < 3:
        raise TrainingDataError(f"--window must be at least 3 closes, got {window}")
    needed = min_rows(window)
    if n_rows < needed:
        raise TrainingDataError(
            f"too few rows: {n_rows} closes, but window {window} with a 70/15/15 split needs at least {needed}; "
            "send a longer history or use a smaller --window"
        )
    return split_sizes(n_rows - window)


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
