"""The backtest's figures: error ratios with intervals against `never`, the table, the CSV, the PNG.

Every figure is scale-free: a day's absolute error is divided by the previous close (the naive forecast),
so a ticker's late, high-price days weigh no more than its early ones (in price units AAPL 2012 carried
28 % of the naive MAE of 2005-2013, 2005 3 %).
- `mae_ratio`: mean relative absolute error of the served forecasts / that of the naive forecast (today's
  close), over the span's days. Across tickers: the mean of the per-ticker ratios.
- `ci95`: 95 % interval of `mae_ratio - mae_ratio(never)` from a paired moving-block bootstrap over the
  calendar (blocks of `BLOCK_DAYS` trading days, `BOOTSTRAP_REPS` replicates, seeded). One set of
  resampled dates serves every policy and every ticker: both policies are resampled on the same days, and
  the pooled interval resamples the same calendar days for all tickers, so the correlation between
  tickers on a day (a market-wide move) stays in the interval.
- `dm_vs_never`: the gate's own Diebold-Mariano test (`retrain.monitoring.significance.diebold_mariano`)
  of the policy's relative errors against never's (pooled: the tickers' relative errors concatenated).
- `drift_unchecked_days`, `drift_unchecked_share` (drift and monitor policies): forecast days with a
  served model on which the drift check could not run (the live monitor alerts "drift not checked").
Many intervals and p-values are read at once (policies x tickers) with no multiplicity correction: about
1 in 20 excludes 0 (or has p < 0.05) by chance alone; `MULTIPLICITY_NOTE` says so under the table.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrain.backtest.engine import DRIFT_POLICIES, TickerResult
from retrain.monitoring.significance import SignificanceError, diebold_mariano

BLOCK_DAYS = 20
BOOTSTRAP_REPS = 1000
SEED = 20130301


def _errors(result: TickerResult, policy: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    days = result.policies[policy].days
    forecast = np.array([d.forecast for d in days])
    realised = np.array([d.realised for d in days])
    naive = np.array([d.naive for d in days])
    return np.abs(forecast - realised), np.abs(naive - realised), naive


MULTIPLICITY_NOTE = (
    "Many intervals and p-values are read at once (policies x tickers), with no multiplicity correction: "
    "about 1 in 20 excludes 0 (p < 0.05) by chance alone."
)


def _relative(result: TickerResult, policy: str) -> tuple[np.ndarray, np.ndarray]:
    """The policy's and the naive forecast's absolute errors divided by the previous close."""
    err, naive_err, prev = _errors(result, policy)
    return err / prev, naive_err / prev


def _block_indices(n: int, rng: np.random.Generator) -> np.ndarray:
    block = min(BLOCK_DAYS, n)
    starts = rng.integers(0, n - block + 1, size=int(np.ceil(n / block)))
    return (starts[:, None] + np.arange(block)[None, :]).reshape(-1)[:n]


def calendar_draws(calendar_days: int, reps: int, rng: np.random.Generator) -> np.ndarray:
    """(reps, calendar_days): how often each calendar day is drawn in each moving-block replicate."""
    return np.stack(
        [np.bincount(_block_indices(calendar_days, rng), minlength=calendar_days) for _ in range(reps)]
    ).astype(np.float64)


def summarise(results: Sequence[TickerResult], policies: Sequence[str]) -> dict[str, Any]:
    """The JSON contract: tickers, policies (pooled over tickers), by_ticker."""
    reference = "never" if "never" in policies else policies[0]
    rng = np.random.default_rng(SEED)
    # One calendar (every ticker's forecast days) and one set of block draws over it, shared by every
    # ticker and policy: paired across policies, and the same days across tickers when pooled.
    ticker_days = {r.ticker: [d.date for d in r.policies[reference].days] for r in results}
    calendar = sorted({day for days in ticker_days.values() for day in days})
    position = {day: i for i, day in enumerate(calendar)}
    counts = calendar_draws(len(calendar), BOOTSTRAP_REPS, rng)
    by_ticker: dict[str, Any] = {}
    diffs: dict[str, list[np.ndarray]] = {p: [] for p in policies}
    for r in results:
        weights = counts[:, [position[day] for day in ticker_days[r.ticker]]]
        ref_err, ref_naive = _relative(r, reference)
        with np.errstate(invalid="ignore", divide="ignore"):  # a replicate may miss a short ticker
            ref_reps = (weights @ ref_err) / (weights @ ref_naive)
        entry: dict[str, Any] = {"first_model": r.first_model, "distinct_fits": r.distinct_fits}
        for p in policies:
            err, naive = _relative(r, p)
            if [d.date for d in r.policies[p].days] != ticker_days[r.ticker]:
                raise ValueError(f"{r.ticker}: policy {p} forecast other days than {reference}")
            ratio = float(err.sum() / naive.sum())
            with np.errstate(invalid="ignore", divide="ignore"):
                reps = (weights @ err) / (weights @ naive) - ref_reps
            diffs[p].append(reps)
            entry[p] = {
                "mae_ratio": round(ratio, 5),
                "ci95": [round(float(v), 5) for v in np.nanpercentile(reps, [2.5, 97.5])],
                **_dm(err, ref_err, p == reference),
                **r.policies[p].summary(),
            }
        by_ticker[r.ticker] = entry
    pooled: dict[str, Any] = {}
    for p in policies:
        ratios = [by_ticker[r.ticker][p]["mae_ratio"] for r in results]
        rel = np.concatenate([_relative(r, p)[0] for r in results])
        rel_ref = np.concatenate([_relative(r, reference)[0] for r in results])
        # The pooled replicate: the mean over tickers of each ticker's difference on the SAME dates.
        boot = np.nanmean(np.stack(diffs[p]), axis=0)
        pooled[p] = {
            "mae_ratio": round(float(np.mean(ratios)), 5),
            "ci95": [round(float(v), 5) for v in np.nanpercentile(boot, [2.5, 97.5])],
            **_dm(rel, rel_ref, p == reference),
            "trainings": sum(r.policies[p].trainings for r in results),
            "deploys": sum(r.policies[p].deploys for r in results),
            "rejections": sum(r.policies[p].rejections for r in results),
            "train_cpu_s": round(sum(r.policies[p].train_cpu_s for r in results), 3),
        }
        if p in DRIFT_POLICIES:
            unchecked = sum(r.policies[p].drift_unchecked_days for r in results)
            days = sum(len(r.policies[p].days) for r in results)
            pooled[p]["drift_unchecked_days"] = unchecked
            pooled[p]["drift_unchecked_share"] = round(unchecked / max(days, 1), 4)
    return {
        "tickers": [r.ticker for r in results],
        "reference": reference,
        "errors": "relative to the previous close",
        "policies": pooled,
        "by_ticker": by_ticker,
    }


def _dm(errors: np.ndarray, reference: np.ndarray, same: bool) -> dict[str, Any]:
    if same:
        return {"dm_vs_never": None}
    try:
        test = diebold_mariano(errors, reference)
    except SignificanceError:  # identical errors every day (e.g. no retrain ever deployed)
        return {"dm_vs_never": None}
    return {
        "dm_vs_never": {
            "statistic": round(test.statistic, 4),
            "p_better": round(test.p_a_better, 5),
            "p_worse": round(test.p_a_worse, 5),
        }
    }


def table(summary: dict[str, Any]) -> str:
    """A fixed-width table: per policy pooled over tickers, then per ticker."""
    head = f"{'policy':<12} {'MAE/naive':>9} {'vs never [95% CI]':>27} {'DM p(better)':>12} {'trainings':>9} {'deploys':>7} {'rejected':>8} {'train CPU s':>11} {'drift unchecked':>15}"

    def row(name: str, v: dict[str, Any]) -> str:
        lo, hi = v["ci95"]
        diff = v["mae_ratio"] - ref_ratio
        dm = v.get("dm_vs_never")
        p = f"{dm['p_better']:.3f}" if dm else "-"
        unchecked = (
            f"{v['drift_unchecked_days']} ({v['drift_unchecked_share']:.1%})"
            if "drift_unchecked_days" in v
            else "-"
        )
        return (
            f"{name:<12} {v['mae_ratio']:>9.4f} {f'{diff:+.4f} [{lo:+.4f}, {hi:+.4f}]':>27} {p:>12} "
            f"{v['trainings']:>9} {v['deploys']:>7} {v['rejections']:>8} {v['train_cpu_s']:>11.2f} "
            f"{unchecked:>15}"
        )

    lines = [
        f"all tickers ({', '.join(summary['tickers'])}): mean of per-ticker ratios (errors relative to the "
        "previous close)",
        head,
    ]
    ref_ratio = summary["policies"][summary["reference"]]["mae_ratio"]
    lines += [row(p, v) for p, v in summary["policies"].items()]
    for ticker, entry in summary["by_ticker"].items():
        ref_ratio = entry[summary["reference"]]["mae_ratio"]
        lines += ["", f"{ticker} (first model on data through {entry['first_model']})", head]
        lines += [row(p, entry[p]) for p in summary["policies"]]
    lines += ["", MULTIPLICITY_NOTE]
    return "\n".join(lines)


def write_days_csv(results: Sequence[TickerResult], path: Path) -> Path:
    """Every served forecast: date (the day forecast), ticker, policy, served version (its data end, or
    none), forecast, realised, naive. Written beside, then renamed."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["date", "ticker", "policy", "served_version", "forecast", "realised", "naive"])
        for r in results:
            for p, pr in r.policies.items():
                for d in pr.days:
                    out.writerow(
                        [
                            d.date,
                            r.ticker,
                            p,
                            d.version,
                            f"{d.forecast:.6f}",
                            f"{d.realised:.6f}",
                            f"{d.naive:.6f}",
                        ]
                    )
    os.replace(tmp, path)
    return path


def write_json(payload: dict[str, Any], path: Path) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def plot(results: Sequence[TickerResult], summary: dict[str, Any], path: Path) -> Path:
    """(a) MAE/naive against training CPU seconds per policy; (b) cumulative error difference against
    never (relative to the previous close, summed over tickers) with a tick at every deploy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    policies = list(summary["policies"])
    reference = summary["reference"]
    colours = {p: f"C{i}" for i, p in enumerate(policies)}
    fig, (ax_cost, ax_cum) = plt.subplots(1, 2, figsize=(15, 5.5), gridspec_kw={"width_ratios": [1, 1.6]})
    for p in policies:
        v = summary["policies"][p]
        ax_cost.scatter(v["train_cpu_s"], v["mae_ratio"], s=70, color=colours[p], label=p, zorder=3)
        lo, hi = v["ci95"]
        ref = summary["policies"][reference]["mae_ratio"]
        ax_cost.vlines(v["train_cpu_s"], ref + lo, ref + hi, color=colours[p], alpha=0.5)
        nudge = (
            -12 if policies.index(p) % 2 else 4
        )  # neighbours with equal cost (never, performance) stay legible
        ax_cost.annotate(p, (v["train_cpu_s"], v["mae_ratio"]), textcoords="offset points", xytext=(6, nudge))
    ax_cost.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    ax_cost.set_xscale("symlog", linthresh=1.0)
    most = max(v["train_cpu_s"] for v in summary["policies"].values())
    ax_cost.set_xlim(0, max(most, 1.0) * 3)  # CPU seconds are never negative; room for the labels
    ax_cost.set_xlabel("CPU seconds spent training (all tickers)")
    ax_cost.set_ylabel("MAE / naive MAE (mean over tickers)")
    ax_cost.set_title("(a) error against training cost (bars: 95 % CI vs never)")

    for p in policies:
        if p == reference:
            continue
        total: dict[Any, float] | None = None
        for r in results:
            err, _, prev = _errors(r, p)
            ref_err, _, _ = _errors(r, reference)
            diff = (err - ref_err) / prev
            days = np.array([d.date for d in r.policies[p].days], dtype="datetime64[D]")
            series = dict(zip(days.tolist(), diff, strict=True))
            if total is None:
                total = series
            else:
                for day, value in series.items():
                    total[day] = total.get(day, 0.0) + value
        if not total:
            continue
        ordered = np.array(sorted(total), dtype="datetime64[D]")
        cumulative = np.cumsum([total[d] for d in ordered.tolist()])
        ax_cum.plot(ordered, cumulative, color=colours[p], label=p, linewidth=1.2)
        # A marker on the line where each retrained model took over (initial models excluded).
        deploys = np.array(
            [
                np.datetime64(e["date"], "D")
                for r in results
                for e in r.policies[p].events
                if e.get("deployed") and e.get("trigger") != "initial"
            ],
            dtype="datetime64[D]",
        )
        if deploys.size:
            at = np.clip(np.searchsorted(ordered, deploys), 0, ordered.size - 1)
            ax_cum.plot(
                ordered[at],
                cumulative[at],
                "o",
                color=colours[p],
                markersize=5,
                markeredgecolor="black",
                markeredgewidth=0.5,
            )
    ax_cum.axhline(0.0, color="grey", linestyle=":", linewidth=1)
    ax_cum.xaxis.set_major_locator(mdates.YearLocator())
    ax_cum.xaxis.set_major_formatter(mdates.DateFormatter("%Y"))
    ax_cum.set_ylabel("cumulative (|error| - |never's error|) / close, summed over tickers")
    ax_cum.set_title(
        f"(b) cumulative error against {reference} (below 0: better); dots: retrained models deployed"
    )
    ax_cum.legend(loc="best")
    fig.suptitle(f"Policy backtest: {', '.join(summary['tickers'])}")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
