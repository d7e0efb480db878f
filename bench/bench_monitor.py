"""Monitoring detectors: false alarms per year on shuffled history, and detection delays of injected changes,
ours (calibrated) next to Azure ML model monitoring's defaults, measured in the same run.

    python bench/bench_monitor.py [--shuffles 20] [--tickers MSFT,AAPL,IBM,GOOG] [--calibrate]

Data: the bundled daily closes (2000-2013). Shuffling a ticker's daily log returns keeps their
distribution and removes any change over time, so every alarm on a shuffled series is a false alarm.

- Ours: `drift_check` (KS on log returns and on absolute log returns, last 20 days vs the 250 before),
  checked every trading day; the CUSUM on the loss differential |model error| - |naive error|, every
  trading day; both with the 20-trading-day cooldown, thresholds `DEFAULT_THRESHOLDS` (the settings'
  defaults). False alarms are measured on shuffles with seeds the calibration never saw.
- Azure ML model monitoring's defaults, checked weekly (every 5 trading days) on the last 5 days against
  the 250-day training window: numeric drift as normalized Wasserstein distance (W1 / sd of the reference)
  > 0.1, and a per-column two-sample KS test at p < 0.05, on returns and on close levels (the model's
  input columns); no cooldown (each breach is an alert).
- The served model is a stand-in, not the LSTM: next close = last close x exp(mean of the last 20 log
  returns), which, like the LSTM, stays close to the naive forecast. Training an LSTM per change point
  would take hours; the CUSUM's threshold should be re-calibrated on real test errors (test_errors.json).
- Injected changes every 150 trading days (64 change points in all) on shuffled returns (so nothing else drifts): the
  served model 10 % worse (its error x 1.1), volatility doubled (returns x 2), a 2:1 split left unadjusted
  (closes / 2); "no change" shows how often each detector fires in 250 days with nothing injected. Delay = trading days from the change to the first alarm within 250 days; `found` = share
  of change points detected within 250 days.

`--calibrate` also prints the thresholds calibrated on seeds 0.. (the values in DEFAULT_THRESHOLDS): the
smallest at which every ticker stays at <= 1 false alarm per year on the calibration shuffles, with each
ticker's rate, and for comparison the threshold the pooled rate alone would give.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scipy import stats  # noqa: E402  (bench only: the Function App never imports scipy)

from retrain.market_data import fetch_prices  # noqa: E402
from retrain.monitoring.calibration import (  # noqa: E402
    CUSUM_REFERENCE_DAYS,
    DEFAULT_THRESHOLDS,
    TRADING_DAYS_PER_YEAR,
    calibrate_cusum_runs,
    calibrate_drift,
    false_alarms_per_year,
    shuffles,
)
from retrain.monitoring.detectors import (  # noqa: E402
    DRIFT_WINDOW_DAYS,
    REFERENCE_DAYS,
    CusumReference,
    alarm_days,
    cusum_alarm_days,
    data_quality,
    drift_check,
    loss_differential,
    rolling_drift_statistics,
)

STANDIN_WINDOW = 20
WEEK = 5
HORIZON = 250
EVAL_SEED = 1000  # seeds the calibration (0..) never used


def standin_errors(closes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(model error, naive error) for each day t >= STANDIN_WINDOW, forecasting close[t] from close[:t]."""
    log_c = np.log(closes)
    r = np.diff(log_c)
    cum = np.concatenate([[0.0], np.cumsum(r)])
    days = np.arange(STANDIN_WINDOW, closes.size)
    mean_r = (cum[days - 1] - cum[days - 1 - STANDIN_WINDOW + 1]) / (STANDIN_WINDOW - 1)
    forecast = closes[days - 1] * np.exp(mean_r)
    return forecast - closes[days], closes[days - 1] - closes[days]


def closes_from_returns(first: float, returns: np.ndarray) -> np.ndarray:
    return first * np.exp(np.concatenate([[0.0], np.cumsum(returns)]))


def nwd(reference: np.ndarray, new: np.ndarray) -> float:
    return float(stats.wasserstein_distance(reference, new) / np.std(reference))


def azure_weekly(
    series: np.ndarray, start: int, stop: int, reference: slice | None = None
) -> dict[str, list[int]]:
    """Days t in [start, stop) with t % WEEK == 0 where each Azure default fires (window: the last WEEK
    values up to t; reference: the REFERENCE_DAYS before the window unless given)."""
    fired: dict[str, list[int]] = {"nwd": [], "ks": []}
    for t in range(start, stop):
        if t % WEEK:
            continue
        new = series[t - WEEK + 1 : t + 1]
        ref = (
            series[reference]
            if reference is not None
            else series[t - WEEK + 1 - REFERENCE_DAYS : t - WEEK + 1]
        )
        if nwd(ref, new) > 0.1:
            fired["nwd"].append(t)
        if stats.ks_2samp(ref, new).pvalue < 0.05:
            fired["ks"].append(t)
    return fired


def false_alarm_table(
    returns_by: dict[str, np.ndarray], first_close: dict[str, float], count: int
) -> list[tuple]:
    """Rows (detector, checks per year, false alarms per year per ticker, min, max, {ticker: rate}) on
    held-out shuffles."""
    th = DEFAULT_THRESHOLDS
    totals: dict[str, list[float]] = {}
    for i, (ticker, returns) in enumerate(returns_by.items()):
        per: dict[str, list[float]] = {k: [] for k in ("drift", "cusum", "split", "nwd_r", "ks_r", "ks_p")}
        for shuffled in shuffles(returns, count, EVAL_SEED + i):
            drift = rolling_drift_statistics(shuffled)
            per["drift"].append(
                false_alarms_per_year(len(alarm_days(drift, th.drift, th.cooldown_days)), drift.size)
            )
            closes = closes_from_returns(first_close[ticker], shuffled)
            model_e, naive_e = standin_errors(closes)
            d = loss_differential(model_e, naive_e, closes[STANDIN_WINDOW - 1 : -1])
            ref = CusumReference.from_differential(d[:CUSUM_REFERENCE_DAYS])
            watched = d[CUSUM_REFERENCE_DAYS:]
            per["cusum"].append(
                false_alarms_per_year(
                    len(cusum_alarm_days(watched, ref, th.cusum, th.cooldown_days)), watched.size
                )
            )
            dates = np.busday_offset("2000-01-03", np.arange(closes.size), roll="forward").astype(str)
            splits = [
                q
                for q in data_quality(dates, closes, split_tolerance=th.split_tolerance)
                if q.kind == "split"
            ]
            per["split"].append(false_alarms_per_year(len(splits), closes.size))
            start = REFERENCE_DAYS + WEEK
            fired_r = azure_weekly(shuffled, start, shuffled.size)
            fired_p = azure_weekly(closes, start, closes.size)
            span = shuffled.size - start
            per["nwd_r"].append(false_alarms_per_year(len(fired_r["nwd"]), span))
            per["ks_r"].append(false_alarms_per_year(len(fired_r["ks"]), span))
            per["ks_p"].append(false_alarms_per_year(len(fired_p["ks"]), span))
        for key, values in per.items():
            totals.setdefault(key, []).append(float(np.mean(values)))
    names = {
        "drift": (
            f"ours: drift KS D > {th.drift:g} (returns, |returns|), daily + cooldown",
            TRADING_DAYS_PER_YEAR,
        ),
        "cusum": (
            f"ours: CUSUM h > {th.cusum:g} on |e_model|-|e_naive|, daily + cooldown",
            TRADING_DAYS_PER_YEAR,
        ),
        "split": (f"ours: split-like jump (ratio within {th.split_tolerance:.0%})", TRADING_DAYS_PER_YEAR),
        "nwd_r": ("Azure default: NWD > 0.1 on returns, weekly", TRADING_DAYS_PER_YEAR / WEEK),
        "ks_r": ("Azure default: KS p < 0.05 on returns, weekly", TRADING_DAYS_PER_YEAR / WEEK),
        "ks_p": ("Azure default: KS p < 0.05 on close levels, weekly", TRADING_DAYS_PER_YEAR / WEEK),
    }
    tickers = list(returns_by)
    return [
        (names[k][0], names[k][1], float(np.mean(v)), min(v), max(v), dict(zip(tickers, v, strict=True)))
        for k, v in totals.items()
    ]


def delay_table(returns_by: dict[str, np.ndarray], first_close: dict[str, float]) -> list[tuple]:
    th = DEFAULT_THRESHOLDS
    results: dict[tuple[str, str], list[int | None]] = {}
    for i, (ticker, returns) in enumerate(returns_by.items()):
        base = shuffles(returns, 1, EVAL_SEED + 100 + i)[0]
        first = REFERENCE_DAYS + DRIFT_WINDOW_DAYS + CUSUM_REFERENCE_DAYS
        for cp in range(first, base.size - HORIZON, 150):
            for change in ("no change", "model 10 % worse", "volatility x2", "2:1 split unadjusted"):
                r = base.copy()
                if change == "volatility x2":
                    r[cp:] *= 2.0
                if change == "2:1 split unadjusted":
                    r[cp] += np.log(0.5)  # closes from day cp+1 on are halved
                closes = closes_from_returns(first_close[ticker], r)
                model_e, naive_e = standin_errors(closes)
                if change == "model 10 % worse":
                    k = cp - STANDIN_WINDOW + 1  # error index of the forecast of close[cp+1]
                    model_e = model_e.copy()
                    model_e[k:] *= 1.1
                # Align everything on return index t (return t ends at close t+1).
                stop = cp + HORIZON
                # Drift: reference fixed at the REFERENCE_DAYS before the change (the champion's window).
                ref = r[cp - REFERENCE_DAYS : cp]
                drift_hit = next(
                    (
                        t - cp
                        for t in range(cp, stop)
                        if drift_check(ref, r[t - DRIFT_WINDOW_DAYS + 1 : t + 1]).statistic > th.drift
                    ),
                    None,
                )
                d = loss_differential(model_e, naive_e, closes[STANDIN_WINDOW - 1 : -1])
                k0 = cp - STANDIN_WINDOW + 1
                reference = CusumReference.from_differential(d[k0 - CUSUM_REFERENCE_DAYS : k0])
                alarms = cusum_alarm_days(d[k0 : k0 + HORIZON], reference, th.cusum, th.cooldown_days)
                cusum_hit = alarms[0] if alarms else None
                dates = np.busday_offset("2000-01-03", np.arange(closes.size), roll="forward").astype(str)
                quality = data_quality(
                    dates[cp - 5 : stop + 1], closes[cp - 5 : stop + 1], split_tolerance=th.split_tolerance
                )
                split_hit = next(
                    (
                        j - 5
                        for j, day in enumerate(dates[cp - 5 : stop + 1])
                        if any(q.date == day and q.kind == "split" for q in quality) and j >= 5
                    ),
                    None,
                )
                fired = azure_weekly(r, cp, stop, reference=slice(cp - REFERENCE_DAYS, cp))
                for name, hit in (
                    ("ours: drift", drift_hit),
                    ("ours: CUSUM", cusum_hit),
                    ("ours: split check", split_hit),
                    ("Azure NWD > 0.1", fired["nwd"][0] - cp if fired["nwd"] else None),
                    ("Azure KS p < 0.05", fired["ks"][0] - cp if fired["ks"] else None),
                ):
                    results.setdefault((change, name), []).append(hit)
    rows = []
    for (change, name), hits in results.items():
        found = [h for h in hits if h is not None]
        median = statistics.median(found) if found else None
        rows.append((change, name, median, len(found) / len(hits), len(hits)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickers", default="MSFT,AAPL,IBM,GOOG")
    parser.add_argument("--shuffles", type=int, default=20, help="held-out shuffles per ticker")
    parser.add_argument("--calibrate", action="store_true", help="also calibrate the thresholds (seeds 0..)")
    args = parser.parse_args()
    started = time.perf_counter()
    returns_by: dict[str, np.ndarray] = {}
    first_close: dict[str, float] = {}
    for ticker in args.tickers.split(","):
        closes = fetch_prices(ticker, source="sample")["Close"].to_numpy(dtype=np.float64)
        returns_by[ticker] = np.diff(np.log(closes))
        first_close[ticker] = float(closes[0])
    years = {t: r.size / TRADING_DAYS_PER_YEAR for t, r in returns_by.items()}
    print(f"data: {', '.join(f'{t} {y:.1f} y' for t, y in years.items())} (bundled sample, split-adjusted)")

    if args.calibrate:
        drift = calibrate_drift(returns_by, shuffle_count=args.shuffles)
        # The CUSUM's null: the served model's errors recomputed on shuffled returns (this keeps the
        # autocorrelation the model's own window gives its errors; shuffling the errors would not).
        null_runs = []
        null_tickers = []
        for i, (t, r) in enumerate(returns_by.items()):
            for shuffled in shuffles(r, args.shuffles, i):
                closes = closes_from_returns(first_close[t], shuffled)
                m, n = standin_errors(closes)
                null_runs.append(loss_differential(m, n, closes[STANDIN_WINDOW - 1 : -1]))
                null_tickers.append(t)
        cusum = calibrate_cusum_runs(null_runs, groups=null_tickers)
        # For comparison only: what the pooled rate alone (the rule before) would have chosen.
        pooled_cusum = calibrate_cusum_runs(null_runs)
        print(
            "\ncalibrated on shuffles (seeds 0..), target <= 1 false alarm per year on every ticker, cooldown "
            f"{DEFAULT_THRESHOLDS.cooldown_days} trading days"
        )
        for name, result, digits in (("drift KS D", drift, 4), ("CUSUM h", cusum, 3)):
            per_ticker = ", ".join(f"{t} {rate:.2f}" for t, rate in result.per_group.items())
            print(
                f"  {name + ' threshold':<21}: {result.threshold:.{digits}f} ({result.false_alarms_per_year:.2f}"
                f"/year pooled in-sample, per ticker {per_ticker}; {result.runs} runs)"
            )
        print(
            f"  (pooled rate alone would give CUSUM h {pooled_cusum.threshold:.3f}, "
            f"{pooled_cusum.false_alarms_per_year:.2f}/year pooled)"
        )

    print(
        f"\nfalse alarms per ticker-year on shuffled returns ({args.shuffles} held-out shuffles per ticker)"
    )
    print(f"{'detector':<72} {'checks/y':>8} {'alarms/y':>9} {'min':>6} {'max':>6}")
    rows = false_alarm_table(returns_by, first_close, args.shuffles)
    for name, checks, mean, low, high, _ in rows:
        print(f"{name:<72} {checks:>8.0f} {mean:>9.2f} {low:>6.2f} {high:>6.2f}")
    print("per ticker (ours, target <= 1.00 on every ticker):")
    for name, _, _, _, _, per_ticker in rows[:2]:
        print(
            f"  {name.split(' (')[0].split(' on ')[0]:<28} "
            + ", ".join(f"{t} {v:.2f}" for t, v in per_ticker.items())
        )

    print(
        f"\ndetection delay in trading days (median over change points; found = detected within {HORIZON} days)"
    )
    print(f"{'injected change':<22} {'detector':<20} {'median delay':>12} {'found':>6} {'n':>4}")
    for change, name, median, found, n in delay_table(returns_by, first_close):
        shown = "-" if median is None else f"{median:.0f}"
        print(f"{change:<22} {name:<20} {shown:>12} {found:>6.0%} {n:>4}")
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
