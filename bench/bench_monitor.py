"""Monitoring detectors: false alarms per ticker-year on nulls that keep volatility clustering and on the
real returns, watched as the live monitor watches them, and detection delays of injected changes; the
previous thresholds beside the current ones, and Azure ML model monitoring's defaults for comparison.

    python bench/bench_monitor.py [--paths 20] [--seed 0] [--tickers MSFT,AAPL,IBM,GOOG] [--calibrate]
                                  [--markdown]

Data: the bundled daily closes (2000-2013), split-adjusted. Nulls (every alarm on them is false):
- GARCH(1,1)-t fitted per ticker (`retrain.monitoring.nulls`), `--paths` stationary paths per ticker as
  long as its history;
- the stationary block bootstrap of its returns (mean block 60 trading days), `--paths` per ticker;
- shuffled returns (the previous calibration's null: no volatility clustering), `--paths` per ticker;
- and the real, unshuffled returns (one path per ticker; alarms there are not all false, but a rate far
  above the null's says the null misses something).

Geometry: "live" is what the monitor does (`calibration.LivePath`): the reference is the 250 returns
before the champion's data end, each trading day from 20 days after it the last 20 returns are tested
against it, and an alarm (outside the 20-day cooldown) retrains, so the reference moves to end on that day.
"rolling" is the previous calibration's view: each 20 days against the 250 just before, with the cooldown.

- Drift: `drift_check` (KS D on returns and |returns|, the larger). CUSUM: on the loss differential
  |model error| - |naive error| of a stand-in model (next close = last close x exp(mean of the last 20 log
  returns), close to the naive forecast like the LSTM), reference its first 150 days, the rest watched.
- Azure ML model monitoring's defaults, weekly on the last 5 days against the 250 before: normalized
  Wasserstein distance > 0.1 and KS p < 0.05, on returns (no cooldown: each breach is an alert).
- Detection delay: changes injected every 150 trading days into one GARCH path per ticker (so nothing else
  drifts): the model 10 % worse (its error x 1.1), volatility doubled (returns x 2), a 2:1 split left
  unadjusted (closes / 2), and "no change" (how often a false alarm alone lands within 250 days). The
  reference ends at the change (a model trained just before it). Delay = trading days from the change to
  the first alarm within 250 days; `found` = share of change points detected within 250 days.

`--calibrate` calibrates the drift threshold on GARCH paths with seeds the evaluation never uses (the
value in `DEFAULT_THRESHOLDS`): the smallest at which every ticker stays at <= 1 false alarm a year in the
live geometry; and checks the CUSUM threshold on the same null (re-calibrated only when a ticker exceeds 1).
`--markdown` prints the tables as GitHub markdown, preceded by one line `settings: {json}`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# The file that holds this script's figures blocks (bench/readme_figures.py).
FIGURES_FILE = REPO / "docs" / "monitoring.md"
sys.path.insert(0, str(REPO))

from scipy import stats  # noqa: E402  (bench only: the Function App never imports scipy)

from retrain.market_data import fetch_prices  # noqa: E402
from retrain.monitoring.calibration import (  # noqa: E402
    CUSUM_REFERENCE_DAYS,
    DEFAULT_THRESHOLDS,
    TRADING_DAYS_PER_YEAR,
    LivePath,
    calibrate_cusum_runs,
    calibrate_live_drift,
    false_alarms_per_year,
    shuffles,
)
from retrain.monitoring.detectors import (  # noqa: E402
    DRIFT_WINDOW_DAYS,
    REFERENCE_DAYS,
    CusumReference,
    Thresholds,
    alarm_days,
    cusum_alarm_days,
    data_quality,
    drift_check,
    loss_differential,
    rolling_drift_statistics,
)
from retrain.monitoring.nulls import BLOCK_DAYS, GarchT, fit_garch_t, simulate_garch_t, stationary_bootstrap  # noqa: E402

STANDIN_WINDOW = 20
WEEK = 5
HORIZON = 250
EVAL_SEED = 1000  # seeds the calibration (0..) never used
# The thresholds before issue 18 (calibrated on shuffled returns in the rolling geometry).
OLD_THRESHOLDS = Thresholds(drift=0.374, cusum=10.391, cooldown_days=20)
NULLS = ("GARCH(1,1)-t", "block bootstrap", "shuffled", "real returns")
# The CUSUM's false-alarm rate varies a lot from path to path (its reference is one 150-day window, calm or
# not) and it is cheap: it is measured on this many times the drift's paths.
CUSUM_PATHS = 5


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


def null_paths(null: str, returns: np.ndarray, garch: GarchT, count: int, seed: int) -> list[np.ndarray]:
    """`count` seeded paths of one null for one ticker (the real returns: the one real path)."""
    if null == "GARCH(1,1)-t":
        return [simulate_garch_t(garch, returns.size, seed + k) for k in range(count)]
    if null == "block bootstrap":
        return [stationary_bootstrap(returns, returns.size, seed + k, BLOCK_DAYS) for k in range(count)]
    if null == "shuffled":
        return shuffles(returns, count, seed)
    return [returns]


def cusum_rate(path: np.ndarray, first_close: float, threshold: float, cooldown: int) -> float:
    closes = closes_from_returns(first_close, path)
    model_e, naive_e = standin_errors(closes)
    d = loss_differential(model_e, naive_e, closes[STANDIN_WINDOW - 1 : -1])
    reference = CusumReference.from_differential(d[:CUSUM_REFERENCE_DAYS])
    watched = d[CUSUM_REFERENCE_DAYS:]
    return false_alarms_per_year(len(cusum_alarm_days(watched, reference, threshold, cooldown)), watched.size)


def cusum_null_runs(paths: list[np.ndarray], first_close: float) -> list[np.ndarray]:
    runs = []
    for path in paths:
        closes = closes_from_returns(first_close, path)
        model_e, naive_e = standin_errors(closes)
        runs.append(loss_differential(model_e, naive_e, closes[STANDIN_WINDOW - 1 : -1]))
    return runs


def false_alarm_rows(
    null: str,
    paths_by: dict[str, list[np.ndarray]],
    first_close: dict[str, float],
    new: Thresholds,
    azure: bool,
) -> list[tuple[str, dict[str, float]]]:
    """Rows (detector, {ticker: false alarms per year, the mean over its paths}) for one null. The CUSUM
    rows use every path given; the drift rows (200 times the CUSUM's cost) the first `len // CUSUM_PATHS`."""
    old = OLD_THRESHOLDS
    rows: dict[str, dict[str, float]] = {}
    for ticker, paths in paths_by.items():
        per: dict[str, list[float]] = {}

        def add(name: str, value: float, per: dict[str, list[float]] = per) -> None:
            per.setdefault(name, []).append(value)

        for path in paths:
            for label, th in (("before", old), ("now", new)):
                add(
                    f"CUSUM h > {th.cusum:g} ({label})",
                    cusum_rate(path, first_close[ticker], th.cusum, th.cooldown_days),
                )
        for path in paths[: max(1, len(paths) // CUSUM_PATHS)]:
            rolling = rolling_drift_statistics(path)
            add(
                f"drift KS D > {old.drift:g}, rolling geometry (before)",
                false_alarms_per_year(len(alarm_days(rolling, old.drift, old.cooldown_days)), rolling.size),
            )
            live = LivePath(path)
            for label, th in (("before", old), ("now", new)):
                add(
                    f"drift KS D > {th.drift:g}, live geometry ({label})",
                    false_alarms_per_year(len(live.alarms(th.drift, th.cooldown_days)), live.monitored_days),
                )
            if azure:
                start = REFERENCE_DAYS + WEEK
                fired = azure_weekly(path, start, path.size)
                span = path.size - start
                add(
                    "Azure default: NWD > 0.1 on returns, weekly",
                    false_alarms_per_year(len(fired["nwd"]), span),
                )
                add(
                    "Azure default: KS p < 0.05 on returns, weekly",
                    false_alarms_per_year(len(fired["ks"]), span),
                )
        for name, values in per.items():
            rows.setdefault(name, {})[ticker] = float(np.mean(values))
    order = ("drift", "CUSUM", "Azure")
    return sorted(
        rows.items(), key=lambda row: next(i for i, word in enumerate(order) if row[0].startswith(word))
    )


def delay_table(
    returns_by: dict[str, np.ndarray],
    first_close: dict[str, float],
    garch_by: dict[str, GarchT],
    new: Thresholds,
    seed: int,
) -> list[tuple]:
    """Rows (change, detector, median delay, share found, change points) on one GARCH path per ticker."""
    th = new
    old = OLD_THRESHOLDS
    results: dict[tuple[str, str], list[int | None]] = {}
    for i, (ticker, returns) in enumerate(returns_by.items()):
        base = simulate_garch_t(garch_by[ticker], returns.size, seed + EVAL_SEED + 100 + i)
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
                drift_statistics = [
                    drift_check(ref, r[t - DRIFT_WINDOW_DAYS + 1 : t + 1]).statistic for t in range(cp, stop)
                ]
                drift_hit_old, drift_hit = (
                    next((j for j, value in enumerate(drift_statistics) if value > threshold), None)
                    for threshold in (old.drift, th.drift)
                )
                d = loss_differential(model_e, naive_e, closes[STANDIN_WINDOW - 1 : -1])
                k0 = cp - STANDIN_WINDOW + 1
                reference = CusumReference.from_differential(d[k0 - CUSUM_REFERENCE_DAYS : k0])
                alarms = cusum_alarm_days(d[k0 : k0 + HORIZON], reference, th.cusum, th.cooldown_days)
                cusum_hit = alarms[0] if alarms else None
                alarms = cusum_alarm_days(d[k0 : k0 + HORIZON], reference, old.cusum, old.cooldown_days)
                cusum_hit_old = alarms[0] if alarms else None
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
                    (f"drift > {old.drift:g} (before)", drift_hit_old),
                    (f"drift > {th.drift:g} (now)", drift_hit),
                    (f"CUSUM > {old.cusum:g} (before)", cusum_hit_old),
                    (f"CUSUM > {th.cusum:g} (now)", cusum_hit),
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


def _paths_said(null: str, paths: int) -> str:
    if null == "real returns":
        return "the one real path per ticker"
    return f"{paths} paths per ticker, {CUSUM_PATHS * paths} for the CUSUM"


def _summary(per_ticker: dict[str, float]) -> tuple[float, float, float]:
    values = list(per_ticker.values())
    return float(np.mean(values)), min(values), max(values)


def markdown_tables(
    lines: list[str],
    tables: list[tuple[str, list[tuple[str, dict[str, float]]]]],
    delays: list[tuple[str, str, float | None, float, int]],
    tickers: list[str],
    paths: int,
    elapsed: float,
) -> tuple[str, str]:
    """(the data, calibration and false-alarm tables; the detection-delay table) as GitHub markdown."""
    alarms: list[str] = [line.removeprefix("\n") + "  " for line in lines]
    alarms.append(f"(the whole bench: {elapsed:.0f} s)")
    for null, rows in tables:
        alarms += ["", f"False alarms per ticker-year, {null} ({_paths_said(null, paths)}):", ""]
        alarms.append("| detector | mean | min | max | " + " | ".join(tickers) + " |")
        alarms.append("|---" * (4 + len(tickers)) + "|")
        for name, per_ticker in rows:
            mean, low, high = _summary(per_ticker)
            cells = " | ".join(f"{per_ticker[t]:.2f}" for t in tickers)
            alarms.append(
                f"| {name.replace('|', chr(92) + '|')} | {mean:.2f} | {low:.2f} | {high:.2f} | {cells} |"
            )
    delay = [
        f"Detection delay in trading days on GARCH paths (median; found within {HORIZON} days; change points):",
        "",
        "| injected change | detector | median delay | found | n |",
        "|---|---|---|---|---|",
    ]
    for change, name, median, found, count in delays:
        shown = "-" if median is None else f"{median:.0f}"
        delay.append(f"| {change} | {name} | {shown} | {found:.0%} | {count} |")
    return "\n".join(alarms), "\n".join(delay)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickers", default="MSFT,AAPL,IBM,GOOG")
    parser.add_argument("--paths", type=int, default=20, help="null paths per ticker and null (held out)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of every null path")
    parser.add_argument("--calibrate", action="store_true", help="also calibrate on GARCH paths (seeds 0..)")
    parser.add_argument("--markdown", action="store_true", help="print GitHub markdown tables")
    parser.add_argument(
        "--write-figures",
        "--write-readme",  # the name before the figures moved to docs/
        dest="write_figures",
        action="store_true",
        help=f"also write the monitor-false-alarms and monitor-detection-delay blocks of {FIGURES_FILE.relative_to(REPO)}",
    )
    parser.add_argument(
        "--figures-file",
        "--readme",
        dest="figures_file",
        type=Path,
        default=FIGURES_FILE,
        help=argparse.SUPPRESS,
    )
    return parser


def settings_of(args: argparse.Namespace) -> dict[str, object]:
    """What the figures depend on: the thresholds as the settings spell them (strings, so they compare with
    `retrain.settings`' defaults), the previous ones, the windows and the null's size."""
    new = DEFAULT_THRESHOLDS
    return {
        "RETRAIN_MONITOR_DRIFT_THRESHOLD": f"{new.drift:g}",
        "RETRAIN_MONITOR_CUSUM_THRESHOLD": f"{new.cusum:g}",
        "RETRAIN_MONITOR_COOLDOWN_DAYS": str(new.cooldown_days),
        "previous": {"drift": OLD_THRESHOLDS.drift, "cusum": OLD_THRESHOLDS.cusum},
        "reference_days": REFERENCE_DAYS,
        "window_days": DRIFT_WINDOW_DAYS,
        "cusum_reference_days": CUSUM_REFERENCE_DAYS,
        "paths": args.paths,
        "cusum_paths": CUSUM_PATHS * args.paths,
        "seed": args.seed,
        "block_days": BLOCK_DAYS,
        "tickers": args.tickers.split(","),
        "horizon_days": HORIZON,
        "calibrate": args.calibrate,
    }


def DEFAULT_SETTINGS(block: str) -> dict[str, object]:  # noqa: N802 (the name readme_figures looks for)
    """What the monitor blocks record when this script runs as docs/monitoring.md says (`--calibrate`), the
    RETRAIN_* settings aside (those are checked against retrain.settings)."""
    recorded = settings_of(build_parser().parse_args(["--calibrate"]))
    return {key: value for key, value in recorded.items() if not key.startswith("RETRAIN_")}


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    if args.paths < 1:
        parser.error("--paths: send at least 1")
    started = time.perf_counter()
    tickers = args.tickers.split(",")
    returns_by: dict[str, np.ndarray] = {}
    first_close: dict[str, float] = {}
    garch_by: dict[str, GarchT] = {}
    for ticker in tickers:
        closes = fetch_prices(ticker, source="sample")["Close"].to_numpy(dtype=np.float64)
        returns_by[ticker] = np.diff(np.log(closes))
        first_close[ticker] = float(closes[0])
        garch_by[ticker] = fit_garch_t(returns_by[ticker])
    years = {t: r.size / TRADING_DAYS_PER_YEAR for t, r in returns_by.items()}
    new = DEFAULT_THRESHOLDS
    out: list[str] = []
    say = out.append
    say(f"data: {', '.join(f'{t} {y:.1f} y' for t, y in years.items())} (bundled sample, split-adjusted)")
    for t, g in garch_by.items():
        say(
            f"GARCH(1,1)-t {t}: mu {g.mu:.2e}, omega {g.omega:.2e}, alpha {g.alpha:.4f}, beta {g.beta:.4f}, "
            f"nu {g.nu:.2f} (persistence {g.alpha + g.beta:.4f})"
        )

    if args.calibrate:
        # Calibration seeds 0.. per ticker; the evaluation below uses seed + EVAL_SEED.. (never the same).
        calibration_paths = {
            t: null_paths("GARCH(1,1)-t", returns_by[t], garch_by[t], CUSUM_PATHS * args.paths, 10_000 * i)
            for i, t in enumerate(tickers)
        }
        drift = calibrate_live_drift(
            {t: [LivePath(p) for p in paths[: args.paths]] for t, paths in calibration_paths.items()},
            cooldown=new.cooldown_days,
        )
        say(
            f"\ncalibrated on GARCH(1,1)-t paths (seeds 0..; {args.paths} per ticker for the drift, in the live "
            f"geometry, {CUSUM_PATHS * args.paths} for the CUSUM), target <= 1 false alarm per year on every "
            f"ticker, cooldown {new.cooldown_days} trading days"
        )
        per = ", ".join(f"{t} {rate:.2f}" for t, rate in drift.per_group.items())
        say(
            f"  drift KS D threshold : {drift.threshold:.3f} ({drift.false_alarms_per_year:.2f}/year pooled; {per})"
        )
        runs: list[np.ndarray] = []
        groups: list[str] = []
        for t, paths in calibration_paths.items():
            runs += cusum_null_runs(paths, first_close[t])
            groups += [t] * len(paths)
        rates = {
            t: float(
                np.mean(
                    [
                        cusum_rate(p, first_close[t], OLD_THRESHOLDS.cusum, OLD_THRESHOLDS.cooldown_days)
                        for p in paths
                    ]
                )
            )
            for t, paths in calibration_paths.items()
        }
        per = ", ".join(f"{t} {rate:.2f}" for t, rate in rates.items())
        if max(rates.values()) <= 1.0:
            say(f"  CUSUM h {OLD_THRESHOLDS.cusum:g} (before) holds on this null ({per}): kept")
        else:
            cusum = calibrate_cusum_runs(runs, groups=groups, cooldown=new.cooldown_days)
            per_new = ", ".join(f"{t} {rate:.2f}" for t, rate in cusum.per_group.items())
            say(
                f"  CUSUM h {OLD_THRESHOLDS.cusum:g} (before) breaks the target ({per}); calibrated h {cusum.threshold:.3f} ({per_new})"
            )

    tables: list[tuple[str, list[tuple[str, dict[str, float]]]]] = []
    for n, null in enumerate(NULLS):
        paths_by = {
            t: null_paths(
                null,
                returns_by[t],
                garch_by[t],
                CUSUM_PATHS * args.paths,
                args.seed + EVAL_SEED + 10_000 * (4 * i + n),
            )
            for i, t in enumerate(tickers)
        }
        tables.append((null, false_alarm_rows(null, paths_by, first_close, new, azure=null == NULLS[0])))
    delays = delay_table(returns_by, first_close, garch_by, new, args.seed)
    elapsed = time.perf_counter() - started

    false_alarms_md, delays_md = markdown_tables(out, tables, delays, tickers, args.paths, elapsed)
    if args.write_figures:
        from bench.readme_figures import write_block

        command = "bench/bench_monitor.py" + (" --calibrate" if args.calibrate else "")
        if args.paths != 20 or args.seed != 0:
            command += f" --paths {args.paths} --seed {args.seed}"
        write_block(args.figures_file, "monitor-false-alarms", false_alarms_md, settings_of(args), command)
        write_block(args.figures_file, "monitor-detection-delay", delays_md, settings_of(args), command)
    if args.markdown:
        print(f"settings: {json.dumps(settings_of(args))}")
        print()
        print(false_alarms_md)
        print()
        print(delays_md)
        return 0

    for line in out:
        print(line)
    for null, rows in tables:
        print(f"\nfalse alarms per ticker-year, {null} ({_paths_said(null, args.paths)})")
        print(f"{'detector':<52} {'mean':>6} {'min':>6} {'max':>6}  " + " ".join(f"{t:>6}" for t in tickers))
        for name, per_ticker in rows:
            mean, low, high = _summary(per_ticker)
            cells = " ".join(f"{per_ticker[t]:>6.2f}" for t in tickers)
            print(f"{name:<52} {mean:>6.2f} {low:>6.2f} {high:>6.2f}  {cells}")
    print(f"\ndetection delay in trading days on GARCH paths (median; found = within {HORIZON} days)")
    print(f"{'injected change':<22} {'detector':<26} {'median delay':>12} {'found':>6} {'n':>4}")
    for change, name, median, found, count in delays:
        shown = "-" if median is None else f"{median:.0f}"
        print(f"{change:<22} {name:<26} {shown:>12} {found:>6.0%} {count:>4}")
    print(f"\n({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
