"""The data asset and its chronological split, as every family sees them (numpy and pandas only).

The data asset is a CSV with `Date` (valid, unique, ascending) and `Close` (finite, > 0). Sample k takes
the closes of days k .. k+window-1 as input and targets the close of day k+window (the NEXT trading day).
The samples split in time order: the first 70 % train, the next 15 % validate, the last 15 % test (the
remainder); nothing is shuffled across those boundaries, and the test part is touched once, for the
metrics. What a family learns from the training and validation parts is its own (`Family.fit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

TRAIN_FRACTION = 0.70
VAL_FRACTION = 0.15
MIN_TRAIN_WINDOWS = 20
MIN_VAL_WINDOWS = 5
MIN_TEST_WINDOWS = 5
MIN_WINDOW = 3  # two returns at least: a window of 2 closes has one return and no spread to learn from


class TrainingDataError(ValueError):
    """The input data cannot be trained on; the message says why and what to send instead."""


@dataclass(frozen=True)
class Series:
    dates: list[str]  # YYYY-MM-DD, ascending
    closes: np.ndarray  # float64, one per date


def load_series(path: Path | str) -> Series:
    """Read the data asset; raises TrainingDataError naming the first bad row or what is missing."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise TrainingDataError(
            f"data file not found: {path} (pass --data with a CSV that has Date and Close)"
        )
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TrainingDataError(
            f"cannot read {path} as CSV ({exc}); send a CSV with Date and Close columns"
        ) from exc
    missing = [c for c in ("Date", "Close") if c not in frame.columns]
    if missing:
        raise TrainingDataError(
            f"{path} has no {' or '.join(missing)} column (columns: {', '.join(map(str, frame.columns))}); "
            "send a CSV with Date and Close columns"
        )
    close = pd.to_numeric(frame["Close"], errors="coerce")
    bad = close.isna() | ~np.isfinite(close.to_numpy(dtype=np.float64, na_value=np.nan))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raw = frame["Close"].iloc[row]
        shown = "empty or n/a" if pd.isna(raw) else repr(raw)  # pandas reads n/a, NA, ... as missing
        raise TrainingDataError(
            f"non-numeric Close in {path} at data row {row + 1} ({shown}); every Close must be a finite number"
        )
    if (close <= 0).any():
        row = int(np.flatnonzero((close <= 0).to_numpy())[0])
        raise TrainingDataError(f"Close must be > 0; {path} has {close.iloc[row]} at data row {row + 1}")
    dates = pd.to_datetime(frame["Date"], errors="coerce")
    if dates.isna().any() or not dates.is_monotonic_increasing or dates.duplicated().any():
        raise TrainingDataError(
            f"Date in {path} must be valid, unique and ascending (oldest first); sort and de-duplicate the file"
        )
    return Series(dates.dt.strftime("%Y-%m-%d").tolist(), close.to_numpy(dtype=np.float64))


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
    if window < MIN_WINDOW:
        raise TrainingDataError(f"--window must be at least {MIN_WINDOW} closes, got {window}")
    needed = min_rows(window)
    if n_rows < needed:
        raise TrainingDataError(
            f"too few rows: {n_rows} closes, but window {window} with a 70/15/15 split needs at least {needed}; "
            "send a longer history or use a smaller --window"
        )
    return split_sizes(n_rows - window)


@dataclass(frozen=True)
class Windows:
    """The samples of a close series and their chronological split."""

    closes: np.ndarray  # the whole series
    window: int
    sizes: SplitSizes
    inputs: np.ndarray  # (n, window) closes of sample k: days k..k+window-1
    targets: np.ndarray  # (n,) close of day k+window

    @property
    def train(self) -> slice:
        return slice(0, self.sizes.train)

    @property
    def val(self) -> slice:
        return slice(self.sizes.train, self.sizes.train + self.sizes.val)

    @property
    def test(self) -> slice:
        return slice(self.sizes.train + self.sizes.val, self.sizes.total)

    def target_days(self, part: slice) -> np.ndarray:
        """Positions in `closes` of the target days of a part (sample k targets day k + window)."""
        return np.arange(part.start, part.stop) + self.window


def windows(closes: np.ndarray, window: int) -> Windows:
    """The samples of `closes` (oldest first) with `window` closes each; raises TrainingDataError when the
    series is too short for every part of the split."""
    closes = np.asarray(closes, dtype=np.float64)
    sizes = check_enough_rows(len(closes), window)
    inputs = np.lib.stride_tricks.sliding_window_view(closes, window)[: sizes.total].copy()
    return Windows(closes, window, sizes, inputs, closes[window:].copy())


def standardised_returns(data: Windows, span_end: int) -> tuple[float, float, np.ndarray, np.ndarray]:
    """For families on lagged returns: the return mean/std fitted on the closes samples [0, span_end)
    touch (inputs and targets; the training span only, or every sample for a refit), and every sample's
    standardised input returns (n, window - 1) and next-day return (n,) under them."""
    rows = slice(0, span_end)
    returns = np.diff(np.log(np.concatenate([data.inputs[rows][0], data.targets[rows]])))
    mean, std = float(returns.mean()), float(returns.std()) or 1.0
    x = (np.diff(np.log(data.inputs), axis=1) - mean) / std
    y = (np.log(data.targets / data.inputs[:, -1]) - mean) / std
    return mean, std, x, y
