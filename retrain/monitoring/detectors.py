"""Drift, performance and data-quality detectors: pure functions over arrays, numpy only.

The live monitor, the benchmark (`bench/bench_monitor.py`) and the policy backtest call these same
functions with the same thresholds (`Thresholds`, defaults from `calibration.py`); none of them keeps a copy.

Public API
----------
- `log_returns(closes)`: daily log returns of a close series.
- `ks_statistic(a, b)`: the two-sample Kolmogorov-Smirnov distance D (sup |F_a - F_b|).
- `drift_check(reference_returns, new_returns)` -> `DriftResult`: KS on log returns and on absolute log
  returns (volatility) of the newest days against the champion's training window; its `statistic` is the
  larger of the two. Prices are never tested: their levels drift by construction.
- `loss_differential(model_error, naive_error, previous_close)`: `|model error| - |naive error|` per day
  (relative to the previous close for the monitor), the series the gate's Diebold-Mariano test and the
  monitor's sequential detector both watch.
- `CusumDetector` / `cusum_path(...)`: one-sided CUSUM on the standardised, clipped loss differential
  (reference mean and scale from the champion's test window); alarms when the sum exceeds its threshold.
- `data_quality(dates, closes, ...)` -> list of `QualityIssue`: stale prices, gaps, split-like jumps.
  Data-quality issues are alerts, never retrain triggers (retraining on broken data makes it worse).
- `alarm_days(statistics, threshold, cooldown)`: the indices where a statistic series alarms, counting
  one alarm and then ignoring `cooldown` days (a retrain is running and then settles).
- `in_cooldown(last_trigger, today, cooldown_days)`: the live cooldown rule on dates.

Thresholds are calibrated (`retrain.monitoring.calibration`) to at most one false alarm per ticker per year
on a null that keeps volatility clustering (GARCH(1,1)-t per ticker), the drift threshold in the live
geometry, and are settings (`RETRAIN_MONITOR_DRIFT_THRESHOLD`, `RETRAIN_MONITOR_CUSUM_THRESHOLD`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# Window sizes the thresholds were calibrated for: a new threshold is needed when they change.
REFERENCE_DAYS = 250  # the champion's training window: about one trading year of returns
DRIFT_WINDOW_DAYS = 20  # the newest trading days tested against it: about one month
CUSUM_K = 0.25  # CUSUM slack in reference standard deviations: tuned to shifts of about half a sd
CUSUM_CLIP = 3.0  # one extreme day moves the sum by at most this many sd
# Split ratios seen in practice (forward and reverse); a daily close ratio this near one is suspect.
SPLIT_RATIOS = (2.0, 3.0, 1.5, 4.0, 5.0, 10.0, 1 / 2, 1 / 3, 2 / 3, 1 / 4, 1 / 5, 1 / 10)


class DetectorError(ValueError):
    """Input a detector cannot judge (too few values, non-finite numbers); the message says what to send."""


@dataclass(frozen=True)
class Thresholds:
    """Every threshold the monitor applies; each is a setting (see `retrain.settings`)."""

    drift: float  # KS D on returns / absolute returns, REFERENCE_DAYS vs DRIFT_WINDOW_DAYS
    cusum: float  # CUSUM h on the standardised loss differential
    cooldown_days: int  # trading days after a trigger during which no other trigger fires
    split_tolerance: float = 0.05  # relative distance of a close ratio to a split ratio
    max_gap_days: int = 7  # calendar days between two trading days before it is a gap (9/11 closed 6)
    stale_days: int = 3  # identical closes in a row before prices are called stale

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------ returns


def _finite_array(values: Sequence[float] | np.ndarray, what: str, minimum: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size < minimum:
        raise DetectorError(f"{what}: {array.size} value(s), at least {minimum} are needed")
    if not np.all(np.isfinite(array)):
        raise DetectorError(f"{what}: contains NaN or infinite values; send finite numbers")
    return array


def log_returns(closes: Sequence[float] | np.ndarray) -> np.ndarray:
    """Daily log returns `log(c[t] / c[t-1])`; closes must be finite and > 0."""
    array = _finite_array(closes, "closes", 2)
    if np.any(array <= 0):
        raise DetectorError("closes: every close must be > 0")
    return np.diff(np.log(array))


# ------------------------------------------------------------------------------------------- drift


def ks_statistic(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov D = sup_x |F_a(x) - F_b(x)| (exact, ties handled)."""
    x = np.sort(_finite_array(a, "first sample", 1))
    y = np.sort(_finite_array(b, "second sample", 1))
    grid = np.concatenate([x, y])
    cdf_x = np.searchsorted(x, grid, side="right") / x.size
    cdf_y = np.searchsorted(y, grid, side="right") / y.size
    return float(np.max(np.abs(cdf_x - cdf_y)))


@dataclass(frozen=True)
class DriftResult:
    statistic: float  # max of the two KS distances: what the threshold applies to
    ks_returns: float
    ks_abs_returns: float
    n_reference: int
    n_new: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def drift_check(
    reference_returns: Sequence[float] | np.ndarray, new_returns: Sequence[float] | np.ndarray
) -> DriftResult:
    """The newest returns against the reference window: location/shape (returns) and volatility
    (absolute returns). Returns, not prices: price levels fail any two-sample test by construction."""
    ref = _finite_array(reference_returns, "reference returns", 20)
    new = _finite_array(new_returns, "new returns", 5)
    ks_r = ks_statistic(ref, new)
    ks_a = ks_statistic(np.abs(ref), np.abs(new))
    return DriftResult(max(ks_r, ks_a), ks_r, ks_a, int(ref.size), int(new.size))


def rolling_drift_statistics(
    returns: Sequence[float] | np.ndarray,
    reference_days: int = REFERENCE_DAYS,
    window_days: int = DRIFT_WINDOW_DAYS,
) -> np.ndarray:
    """`drift_check(...).statistic` at every day t >= reference_days + window_days, each window of
    `window_days` against the `reference_days` before it (the calibration's and the benchmark's view)."""
    r = _finite_array(returns, "returns", reference_days + window_days)
    out = np.empty(r.size - reference_days - window_days + 1)
    for i in range(out.size):
        ref = r[i : i + reference_days]
        new = r[i + reference_days : i + reference_days + window_days]
        out[i] = max(ks_statistic(ref, new), ks_statistic(np.abs(ref), np.abs(new)))
    return out


# ------------------------------------------------------------------------------------- performance


def loss_differential(
    model_error: Sequence[float] | np.ndarray,
    naive_error: Sequence[float] | np.ndarray,
    previous_close: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """`|model error| - |naive error|` per day: > 0 where the naive forecast was better. With
    `previous_close` (the close each forecast started from) it is relative to the price level, which is
    what the monitor watches: errors in currency grow with the price, so a CUSUM on them would drift."""
    m = _finite_array(model_error, "model errors", 1)
    n = _finite_array(naive_error, "naive errors", 1)
    if m.size != n.size:
        raise DetectorError(f"model errors ({m.size}) and naive errors ({n.size}) must be paired day by day")
    d = np.abs(m) - np.abs(n)
    if previous_close is None:
        return d
    c = _finite_array(previous_close, "previous closes", 1)
    if c.size != d.size or np.any(c <= 0):
        raise DetectorError("previous closes: send one close > 0 per forecast day")
    return d / c


@dataclass(frozen=True)
class CusumReference:
    """What 'normal' is for the served model: the loss differential's mean and scale on a reference
    window (the champion's test window, from its `test_errors.json`)."""

    mean: float
    scale: float

    @classmethod
    def from_differential(cls, differential: Sequence[float] | np.ndarray) -> CusumReference:
        d = _finite_array(differential, "reference loss differential", 10)
        # A robust scale (MAD) so one crash day in the reference does not blunt the detector.
        mad = float(np.median(np.abs(d - np.median(d)))) * 1.4826
        scale = mad if mad > 0 else float(np.std(d))
        if not scale > 0:
            raise DetectorError("reference loss differential is constant; the reference window is unusable")
        # The centre the CUSUM's clipped steps average to zero around (a Huber location estimate): with
        # the plain mean, a skewed differential would make the sum drift up with no change at all.
        centre = float(np.median(d))
        for _ in range(50):
            step = scale * float(np.mean(np.clip((d - centre) / scale, -CUSUM_CLIP, CUSUM_CLIP)))
            centre += step
            if abs(step) < 1e-12 * scale:
                break
        return cls(centre, scale)


@dataclass
class CusumDetector:
    """One-sided CUSUM: S = max(0, S + clip((d - mean) / scale) - k); alarm when S > threshold, then S = 0.

    State is two numbers (`value`, `days`), so the monitor can keep it between days as plain JSON."""

    reference: CusumReference
    threshold: float
    k: float = CUSUM_K
    clip: float = CUSUM_CLIP
    value: float = 0.0
    days: int = 0
    history: list[float] = field(default_factory=list, repr=False)

    def update(self, differential: float) -> bool:
        """Feed one day's loss differential; True when the detector alarms (and resets)."""
        if not math.isfinite(differential):
            raise DetectorError(f"loss differential {differential!r} is not finite")
        z = (differential - self.reference.mean) / self.reference.scale
        z = min(max(z, -self.clip), self.clip)
        self.value = max(0.0, self.value + z - self.k)
        self.days += 1
        if self.value > self.threshold:
            self.history.append(self.value)
            self.value = 0.0
            return True
        return False


def cusum_path(
    differential: Sequence[float] | np.ndarray,
    reference: CusumReference,
    *,
    k: float = CUSUM_K,
    clip: float = CUSUM_CLIP,
) -> np.ndarray:
    """The CUSUM statistic after each day, never reset (for calibration, reports and plots)."""
    d = _finite_array(differential, "loss differential", 1)
    z = np.clip((d - reference.mean) / reference.scale, -clip, clip) - k
    out = np.empty_like(z)
    s = 0.0
    for i, step in enumerate(z):
        s = max(0.0, s + step)
        out[i] = s
    return out


def cusum_alarm_days(
    differential: Sequence[float] | np.ndarray,
    reference: CusumReference,
    threshold: float,
    cooldown: int,
    *,
    k: float = CUSUM_K,
    clip: float = CUSUM_CLIP,
) -> list[int]:
    """Days the CUSUM alarms; after an alarm it restarts from 0 once `cooldown` days have passed."""
    d = _finite_array(differential, "loss differential", 1)
    z = np.clip((d - reference.mean) / reference.scale, -clip, clip) - k
    alarms: list[int] = []
    s = 0.0
    resume = 0
    for i, step in enumerate(z):
        if i < resume:
            continue
        s = max(0.0, s + step)
        if s > threshold:
            alarms.append(i)
            s = 0.0
            resume = i + 1 + cooldown
    return alarms


# ----------------------------------------------------------------------------------------- alarms


def alarm_days(statistics: Sequence[float] | np.ndarray, threshold: float, cooldown: int) -> list[int]:
    """Indices where `statistics > threshold`, skipping `cooldown` days after each alarm."""
    values = np.asarray(statistics, dtype=np.float64).reshape(-1)
    alarms: list[int] = []
    resume = 0
    for i in np.flatnonzero(values > threshold):
        if i >= resume:
            alarms.append(int(i))
            resume = int(i) + 1 + cooldown
    return alarms


def in_cooldown(last_trigger: dt.date | str | None, today: dt.date | str, cooldown_days: int) -> bool:
    """True while fewer than `cooldown_days` weekdays have passed since the last trigger."""
    if last_trigger is None or cooldown_days <= 0:
        return False
    start = dt.date.fromisoformat(str(last_trigger)[:10])
    end = dt.date.fromisoformat(str(today)[:10])
    return int(np.busday_count(start, end)) < cooldown_days


# ----------------------------------------------------------------------------------- data quality


@dataclass(frozen=True)
class QualityIssue:
    kind: str  # "split", "gap" or "stale"
    date: str  # YYYY-MM-DD where it shows
    detail: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def split_like(ratio: float, tolerance: float = 0.05) -> float | None:
    """The split ratio that a daily close ratio matches within `tolerance` (relative), else None."""
    if not math.isfinite(ratio) or ratio <= 0:
        return None
    for split in SPLIT_RATIOS:
        if abs(ratio / split - 1.0) <= tolerance:
            return split
    return None


def data_quality(
    dates: Sequence[Any],
    closes: Sequence[float] | np.ndarray,
    *,
    split_tolerance: float = 0.05,
    max_gap_days: int = 7,
    stale_days: int = 3,
    as_of: dt.date | str | None = None,
) -> list[QualityIssue]:
    """Split-like jumps (close ratio near 2:1, 3:1, 1:2, ...), gaps of more than `max_gap_days` calendar
    days between trading days (and between the newest day and `as_of`), and `stale_days` identical
    closes in a row at the end of the series."""
    c = _finite_array(closes, "closes", 1)
    days = [dt.date.fromisoformat(str(d)[:10]) for d in dates]
    if len(days) != c.size:
        raise DetectorError(f"{len(days)} dates for {c.size} closes; send one date per close")
    issues: list[QualityIssue] = []
    for i in range(1, c.size):
        split = split_like(c[i] / c[i - 1], split_tolerance)
        if split is not None:
            issues.append(
                QualityIssue(
                    "split",
                    days[i].isoformat(),
                    f"close {c[i - 1]:.4g} -> {c[i]:.4g} (ratio {c[i] / c[i - 1]:.4f}, near {split:.4g}): "
                    "an unadjusted split? send split-adjusted prices",
                )
            )
        gap = (days[i] - days[i - 1]).days
        if gap > max_gap_days:
            issues.append(
                QualityIssue(
                    "gap", days[i].isoformat(), f"{gap} calendar days since {days[i - 1].isoformat()}"
                )
            )
    if as_of is not None and days:
        lag = (dt.date.fromisoformat(str(as_of)[:10]) - days[-1]).days
        if lag > max_gap_days:
            issues.append(
                QualityIssue("stale", days[-1].isoformat(), f"newest close is {lag} days older than {as_of}")
            )
    if stale_days > 1 and c.size >= stale_days and np.all(c[-stale_days:] == c[-1]):
        issues.append(
            QualityIssue(
                "stale", days[-1].isoformat(), f"the last {stale_days} closes are identical ({c[-1]:.6g})"
            )
        )
    return issues
