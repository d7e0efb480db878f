"""Thresholds calibrated on shuffled history to a false-alarm rate.

Shuffling a ticker's daily returns (or the served model's daily loss differentials) keeps their
distribution and destroys any change over time: every alarm on a shuffled series is a false alarm. A
threshold is the smallest value at which the detector, run day by day over many shuffles of the four
bundled tickers with the cooldown applied, raises at most `target_per_year` alarms per ticker-year on
EVERY ticker (issue 13: "at most one false alarm per ticker per year"). A pooled rate would let a noisy
ticker sit above the target while a quiet one sits below it.

Public API
----------
- `shuffles(values, count, seed)`: seeded permutations of one series.
- `calibrate(runs, alarms_of, days_of, candidates, target_per_year, group_of=...)` -> `Calibration`: the
  general search; with `group_of` every group (ticker) must meet the target, without it the pooled rate.
- `calibrate_drift(returns_by_ticker, ...)`, `calibrate_cusum(differentials_by_ticker, ...)`,
  `calibrate_cusum_runs(null_runs, groups=...)`: the two detectors of `retrain.monitoring.detectors`, with
  the same window sizes the monitor uses, held to the target on every ticker (`Calibration.per_group`).
- `false_alarms_per_year(alarm_count, days)`.
- `thresholds_from_settings()`: what the live monitor applies (the settings below).
- `DEFAULT_THRESHOLDS`: the values `bench/bench_monitor.py --calibrate` produced (see the README table),
  the settings' defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from retrain.monitoring.detectors import (
    DRIFT_WINDOW_DAYS,
    REFERENCE_DAYS,
    CusumReference,
    Thresholds,
    alarm_days,
    cusum_alarm_days,
    rolling_drift_statistics,
)

TRADING_DAYS_PER_YEAR = 252
TARGET_FALSE_ALARMS_PER_YEAR = 1.0
DEFAULT_COOLDOWN_DAYS = 20
# Days of loss differential the CUSUM's reference is measured on (about the trainer's test window).
CUSUM_REFERENCE_DAYS = 150

# From `python bench/bench_monitor.py --calibrate` on MSFT, AAPL, IBM, GOOG (2000-2013), 20 shuffles each,
# target <= 1 false alarm per ticker-year on every ticker, cooldown 20 trading days; re-run it when a window
# size changes.
DEFAULT_THRESHOLDS = Thresholds(drift=0.374, cusum=10.391, cooldown_days=DEFAULT_COOLDOWN_DAYS)


def thresholds_from_settings(environ: Mapping[str, str] | None = None) -> Thresholds:
    """The thresholds the live monitor applies: the settings, whose defaults are `DEFAULT_THRESHOLDS`."""
    from retrain import settings

    thresholds = Thresholds(
        drift=settings.get_float("RETRAIN_MONITOR_DRIFT_THRESHOLD", environ),
        cusum=settings.get_float("RETRAIN_MONITOR_CUSUM_THRESHOLD", environ),
        cooldown_days=settings.get_int("RETRAIN_MONITOR_COOLDOWN_DAYS", environ),
    )
    if not (0 < thresholds.drift <= 1 and thresholds.cusum > 0 and thresholds.cooldown_days >= 0):
        raise settings.SettingsError(
            f"monitor thresholds {thresholds.to_dict()}: the drift threshold must be in (0, 1], the CUSUM "
            "threshold > 0 and the cooldown >= 0 days"
        )
    return thresholds


@dataclass(frozen=True)
class Calibration:
    threshold: float
    false_alarms_per_year: float  # pooled over all runs of the calibration shuffles, at that threshold
    alarms: int
    days: int
    runs: int
    # Per group (ticker) when calibrated per group: its false alarms per year at that threshold.
    per_group: Mapping[Hashable, float] = field(default_factory=dict)

    @property
    def worst_group(self) -> tuple[Hashable, float] | None:
        """The group with the highest false-alarm rate and that rate (None when calibrated pooled)."""
        return max(self.per_group.items(), key=lambda item: item[1]) if self.per_group else None


def false_alarms_per_year(alarm_count: int, days: int) -> float:
    return alarm_count / (days / TRADING_DAYS_PER_YEAR) if days else float("nan")


def shuffles(values: Sequence[float] | np.ndarray, count: int, seed: int) -> list[np.ndarray]:
    """`count` seeded random permutations of `values` (reproducible)."""
    rng = np.random.default_rng(seed)
    array = np.asarray(values, dtype=np.float64)
    return [rng.permutation(array) for _ in range(count)]


def calibrate(
    runs: Sequence[object],
    alarms_of: Callable[[object, float], int],
    days_of: Callable[[object], int],
    candidates: Iterable[float],
    target_per_year: float = TARGET_FALSE_ALARMS_PER_YEAR,
    *,
    group_of: Callable[[object], Hashable] | None = None,
) -> Calibration:
    """The smallest candidate threshold whose false-alarm rate over `runs` is <= the target.

    With `group_of` (e.g. run -> ticker) the rate of EVERY group must be <= the target, so no ticker is
    allowed above it because another sits below; without it the pooled rate over all runs counts.
    Candidates are tried from the smallest up; the first that meets the target wins, so the result is
    the most sensitive threshold allowed. Raises when no candidate meets it."""
    runs = list(runs)
    if not runs:
        raise ValueError("no runs to calibrate on: send at least one shuffled series")
    groups = [group_of(run) for run in runs] if group_of is not None else [None] * len(runs)
    days = [days_of(run) for run in runs]
    days_by_group: dict[Hashable, int] = {}
    for group, run_days in zip(groups, days, strict=True):
        days_by_group[group] = days_by_group.get(group, 0) + run_days
    total_days = sum(days)
    for threshold in sorted(float(c) for c in candidates):
        alarms_by_group = dict.fromkeys(days_by_group, 0)
        for group, run in zip(groups, runs, strict=True):
            alarms_by_group[group] += alarms_of(run, threshold)
        rates = {g: false_alarms_per_year(a, days_by_group[g]) for g, a in alarms_by_group.items()}
        if all(rate <= target_per_year for rate in rates.values()):
            alarms = sum(alarms_by_group.values())
            return Calibration(
                threshold,
                false_alarms_per_year(alarms, total_days),
                alarms,
                total_days,
                len(runs),
                rates if group_of is not None else {},
            )
    per = "every group's" if group_of is not None else "the pooled"
    raise ValueError(f"no candidate threshold brings {per} rate to {target_per_year} false alarms per year")


def calibrate_drift(
    returns_by_ticker: Mapping[str, np.ndarray],
    *,
    shuffle_count: int = 20,
    seed: int = 0,
    cooldown: int = DEFAULT_COOLDOWN_DAYS,
    target_per_year: float = TARGET_FALSE_ALARMS_PER_YEAR,
    reference_days: int = REFERENCE_DAYS,
    window_days: int = DRIFT_WINDOW_DAYS,
) -> Calibration:
    """The drift threshold (KS D) for `drift_check` on shuffled returns, meeting the target on every ticker."""
    runs = [
        (ticker, rolling_drift_statistics(shuffled, reference_days, window_days))
        for i, (ticker, returns) in enumerate(returns_by_ticker.items())
        for shuffled in shuffles(returns, shuffle_count, seed + i)
    ]
    pooled = np.concatenate([statistics for _, statistics in runs])
    candidates = np.unique(np.round(np.quantile(pooled, np.linspace(0.9, 1.0, 401)), 4))
    return calibrate(
        runs,
        lambda run, h: len(alarm_days(run[1], h, cooldown)),  # type: ignore[index]
        lambda run: len(run[1]),  # type: ignore[index]
        candidates,
        target_per_year,
        group_of=lambda run: run[0],  # type: ignore[index]
    )


def calibrate_cusum(
    differentials_by_ticker: Mapping[str, np.ndarray],
    *,
    shuffle_count: int = 20,
    seed: int = 0,
    cooldown: int = DEFAULT_COOLDOWN_DAYS,
    target_per_year: float = TARGET_FALSE_ALARMS_PER_YEAR,
    reference_days: int = CUSUM_REFERENCE_DAYS,
) -> Calibration:
    """The CUSUM threshold h on shuffled loss differentials, per ticker (see `calibrate_cusum_runs`)."""
    runs: list[np.ndarray] = []
    groups: list[str] = []
    for i, (ticker, differential) in enumerate(differentials_by_ticker.items()):
        for shuffled in shuffles(differential, shuffle_count, seed + i):
            runs.append(shuffled)
            groups.append(ticker)
    return calibrate_cusum_runs(
        runs,
        groups=groups,
        cooldown=cooldown,
        target_per_year=target_per_year,
        reference_days=reference_days,
    )


def calibrate_cusum_runs(
    runs: Sequence[np.ndarray],
    *,
    groups: Sequence[Hashable] | None = None,
    cooldown: int = DEFAULT_COOLDOWN_DAYS,
    target_per_year: float = TARGET_FALSE_ALARMS_PER_YEAR,
    reference_days: int = CUSUM_REFERENCE_DAYS,
) -> Calibration:
    """The CUSUM threshold h on loss-differential series with no change in them (e.g. the served model's
    errors recomputed on shuffled returns, which keeps the model's own error autocorrelation): in each
    run the first `reference_days` are the reference (the champion's test window), the rest is watched.
    `groups` (one per run, e.g. its ticker): every group must meet the target; without it, the pooled rate."""
    if groups is not None and len(groups) != len(runs):
        raise ValueError(f"groups: send one group per run ({len(runs)} runs, {len(groups)} groups)")
    labels = list(groups) if groups is not None else [None] * len(runs)
    triples = [
        (CusumReference.from_differential(run[:reference_days]), run[reference_days:], label)
        for run, label in zip(runs, labels, strict=True)
    ]
    candidates = np.round(np.geomspace(1.0, 100.0, 241), 3)
    return calibrate(
        triples,
        lambda run, h: len(cusum_alarm_days(run[1], run[0], h, cooldown)),  # type: ignore[index]
        lambda run: len(run[1]),  # type: ignore[index]
        candidates,
        target_per_year,
        group_of=(lambda run: run[2]) if groups is not None else None,  # type: ignore[index]
    )
