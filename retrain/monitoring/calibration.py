"""Thresholds calibrated to a false-alarm rate on history with nothing changing in it.

A threshold is the smallest value at which the detector, run day by day over many null paths of the four
bundled tickers with the cooldown applied, raises at most `target_per_year` alarms per ticker-year on
EVERY ticker (issue 13: "at most one false alarm per ticker per year"). A pooled rate would let a noisy
ticker sit above the target while a quiet one sits below it.

The null and the geometry (issue 18). The drift threshold was first calibrated on SHUFFLED returns, each
20 days against the 250 just before ("rolling"). Shuffling destroys volatility clustering, and clustering is
what makes a month look unlike the year before it: at that threshold (0.374) a stationary GARCH(1,1)-t null
fitted per ticker (`retrain.monitoring.nulls`) fired 2.3-3.3 times a ticker-year, a 60-day block bootstrap
3.2-4.6 times, and the real 2000-2013 returns 2.1-3.4 times. The drift threshold is now calibrated on the
GARCH(1,1)-t null in the live geometry (`LivePath`: the reference is the 250 returns before the champion's
data end, checked each day from 20 days after it, and moved to the alarm day on each alarm, as a retrain
does), held to <= 1 false alarm a year on every ticker: `calibrate_live_drift`.

Why the same KS statistic with a higher threshold, not returns standardised by a trailing volatility with a
separate volatility signal: (1) the live check receives the reference (250 returns before the data end)
and the newest 20 returns, with days or years between them (`drift_check(reference, new)`); a causal
trailing volatility needs the returns in between, which the check does not have; (2) a doubled volatility is
the change the drift check exists for (the split has its own check, the worse model the CUSUM), and under
this null a 20-day volatility burst IS the null, so a separate volatility signal must be held to the same
rate by the same kind of higher threshold; standardising would only remove the volatility from the KS
test. The price, printed by `bench/bench_monitor.py`: the doubled-volatility delay on GARCH paths.

The CUSUM threshold is checked on the same GARCH null (its own geometry: the reference is the first 150
days of loss differential, the rest watched, which is stricter than live, where a retrain moves the
reference). The shuffles' 10.391 gave about 0.9 a year, above 1.0 for MSFT on the calibration paths (1.04
on 100 paths), so it was re-calibrated on that null: 10.593. Rates from one set of 100 paths to another
move by about 0.1-0.3 a ticker-year (one calm or wild 150-day reference decides a whole path), so this
margin is thin by construction, like the drift's.

Public API
----------
- `shuffles(values, count, seed)`: seeded permutations of one series (the previous null).
- `calibrate(runs, alarms_of, days_of, candidates, target_per_year, group_of=...)` -> `Calibration`: the
  general search; with `group_of` every group (ticker) must meet the target, without it the pooled rate.
- `calibrate_drift(returns_by_ticker, ...)` (shuffles, rolling geometry: the previous calibration),
  `calibrate_cusum(differentials_by_ticker, ...)`, `calibrate_cusum_runs(null_runs, groups=...)`.
- `LivePath(returns)`: one null path watched in the live geometry; `.alarms(threshold, cooldown)`.
- `window_drift_statistics(reference, returns, window_days)`: `drift_check` against one reference for
  every window, vectorised.
- `live_false_alarms_per_year(paths, threshold, cooldown)`, `calibrate_live_drift(paths_by_ticker)`.
- `false_alarms_per_year(alarm_count, days)`.
- `thresholds_from_settings()`: what the live monitor applies (the settings below).
- `DEFAULT_THRESHOLDS`: the values `bench/bench_monitor.py --calibrate` produced, the settings' defaults.
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

# From `python bench/bench_monitor.py --calibrate` on MSFT, AAPL, IBM, GOOG (2000-2013), target <= 1 false
# alarm per ticker-year on every ticker, cooldown 20 trading days, on GARCH(1,1)-t paths: the drift threshold
# on 20 paths per ticker in the live geometry (50 paths gave 0.485), the CUSUM's on 100 paths per ticker.
# Re-run it when a window size changes.
DEFAULT_THRESHOLDS = Thresholds(drift=0.487, cusum=10.593, cooldown_days=DEFAULT_COOLDOWN_DAYS)


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


# ------------------------------------------------------------------------------------ live geometry


def window_drift_statistics(
    reference: Sequence[float] | np.ndarray, returns: Sequence[float] | np.ndarray, window_days: int
) -> np.ndarray:
    """`drift_check(reference, returns[s - window_days : s]).statistic` for every s in
    [window_days, len(returns)], vectorised (the live geometry holds one reference for many days)."""
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    r = np.asarray(returns, dtype=np.float64).reshape(-1)
    if r.size < window_days:
        return np.empty(0)
    windows = np.lib.stride_tricks.sliding_window_view(r, window_days)
    out = np.empty(windows.shape[0])
    for chunk in range(0, windows.shape[0], 256):
        part = windows[chunk : chunk + 256]
        out[chunk : chunk + 256] = np.maximum(_ks_rows(ref, part), _ks_rows(np.abs(ref), np.abs(part)))
    return out


def _ks_rows(reference: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Exact two-sample KS D of `reference` against each row of `windows` (ties handled as `ks_statistic`):
    the supremum is reached at a sample point, so both CDFs are evaluated at every point of both samples."""
    ref = np.sort(reference)
    n, w = ref.size, windows.shape[1]
    # At the reference's points.
    f_ref_at_ref = np.searchsorted(ref, ref, side="right") / n
    f_win_at_ref = (windows[:, :, None] <= ref[None, None, :]).sum(axis=1) / w
    d_ref = np.abs(f_win_at_ref - f_ref_at_ref[None, :]).max(axis=1)
    # At the window's points.
    f_ref_at_win = np.searchsorted(ref, windows, side="right") / n
    f_win_at_win = (windows[:, :, None] <= windows[:, None, :]).sum(axis=1) / w
    d_win = np.abs(f_win_at_win - f_ref_at_win).max(axis=1)
    return np.maximum(d_ref, d_win)


@dataclass
class LivePath:
    """One return series watched as the live monitor watches it: the champion's reference is the
    `reference_days` returns before its data end; from `window_days` returns after the data end on, each
    trading day the newest `window_days` returns are tested against it; an alarm outside the cooldown
    retrains on the data through that day, so the reference moves to end there. The statistics of one
    reference are cached, so trying many thresholds on one path re-uses them."""

    returns: np.ndarray
    reference_days: int = REFERENCE_DAYS
    window_days: int = DRIFT_WINDOW_DAYS
    _cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.returns = np.asarray(self.returns, dtype=np.float64).reshape(-1)
        if self.returns.size < self.reference_days + self.window_days or not np.all(
            np.isfinite(self.returns)
        ):
            raise ValueError(
                f"returns: {self.returns.size} values; send at least reference_days + window_days = "
                f"{self.reference_days + self.window_days} finite returns"
            )

    @property
    def first_check(self) -> int:
        return self.reference_days + self.window_days

    @property
    def monitored_days(self) -> int:
        """Trading days from the first possible check to the end (cooldown days included, as before)."""
        return self.returns.size - self.first_check + 1

    def statistics_after(self, data_end: int, days: int | None = None) -> np.ndarray:
        """The drift statistic on the days s = data_end + window_days, ... (s = returns seen), at most
        `days` of them (all to the end when None), against returns[data_end - reference_days : data_end].
        Computed lazily and kept: a reference usually alarms long before the end of the path."""
        available = self.returns.size - data_end - self.window_days + 1
        wanted = available if days is None else min(days, available)
        done = self._cache.get(data_end, np.empty(0))
        if done.size < wanted:
            reference = self.returns[data_end - self.reference_days : data_end]
            more = max(wanted - done.size, done.size, 128)  # grow geometrically
            start = data_end + done.size
            stop = min(self.returns.size, start + more + self.window_days - 1)
            done = np.concatenate(
                [done, window_drift_statistics(reference, self.returns[start:stop], self.window_days)]
            )
            self._cache[data_end] = done
        return done[: max(wanted, 0)]

    def alarms(self, threshold: float, cooldown: int = DEFAULT_COOLDOWN_DAYS) -> list[int]:
        """Days (returns seen) on which the drift check alarms, the reference moving to each alarm day."""
        data_end = self.reference_days
        alarms: list[int] = []
        # After an alarm at s the next check needs window_days new returns and the cooldown to pass.
        skip = 0  # statistics_after(data_end)[0] is the day data_end + window_days
        days = 128
        while True:
            available = self.returns.size - data_end - self.window_days + 1
            statistics = self.statistics_after(data_end, days)
            above = np.flatnonzero(statistics[skip:] > threshold)
            if above.size:
                day = data_end + self.window_days + skip + int(above[0])
                alarms.append(day)
                skip = max(0, cooldown - self.window_days)
                data_end, days = day, 128
            elif statistics.size >= available:
                return alarms
            else:
                days *= 2


def live_false_alarms_per_year(
    paths: Sequence[LivePath], threshold: float, cooldown: int = DEFAULT_COOLDOWN_DAYS
) -> float:
    """Alarms per year over `paths` in the live geometry (every alarm on a null path is false)."""
    alarms = sum(len(path.alarms(threshold, cooldown)) for path in paths)
    return false_alarms_per_year(alarms, sum(path.monitored_days for path in paths))


def calibrate_live_drift(
    paths_by_ticker: Mapping[str, Sequence[LivePath]],
    *,
    cooldown: int = DEFAULT_COOLDOWN_DAYS,
    target_per_year: float = TARGET_FALSE_ALARMS_PER_YEAR,
) -> Calibration:
    """The smallest drift threshold at which every ticker's null paths, watched in the live geometry
    (`LivePath`), raise at most `target_per_year` alarms a year. KS D between 20 and 250 values moves in
    steps of 1/500, so candidates are the midpoints between those steps, searched by bisection per
    ticker (the rate falls as the threshold rises), then checked together and raised until all hold."""
    if not paths_by_ticker or not all(paths_by_ticker.values()):
        raise ValueError("no null paths to calibrate on: send at least one path per ticker")
    first = next(iter(paths_by_ticker.values()))[0]
    # D = |i/250 - j/20| is a multiple of 1/lcm(250, 20) = 1/500.
    steps = int(np.lcm(first.reference_days, first.window_days))

    def candidate(k: int) -> float:
        return round((k + 0.5) / steps, 6)

    def rate(ticker: str, k: int) -> float:
        return live_false_alarms_per_year(paths_by_ticker[ticker], candidate(k), cooldown)

    ks: list[int] = []
    for ticker in paths_by_ticker:
        low, high = 0, steps  # candidate(steps) > 1 never alarms
        while low < high:
            middle = (low + high) // 2
            if rate(ticker, middle) <= target_per_year:
                high = middle
            else:
                low = middle + 1
        ks.append(low)
    k = max(ks)
    while True:
        rates: dict[Hashable, float] = {ticker: rate(ticker, k) for ticker in paths_by_ticker}
        if all(value <= target_per_year for value in rates.values()) or k >= steps:
            break
        k += 1
    threshold = candidate(k)
    paths = [path for group in paths_by_ticker.values() for path in group]
    alarms = sum(len(path.alarms(threshold, cooldown)) for path in paths)
    days = sum(path.monitored_days for path in paths)
    return Calibration(threshold, false_alarms_per_year(alarms, days), alarms, days, len(paths), rates)
