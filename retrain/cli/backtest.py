"""`retrain backtest`: replay history to choose how often to retrain (see retrain/backtest/__init__.py).

    retrain backtest --ticker MSFT[,AAPL,...] --start DATE --end DATE
        [--policies never,weekly,monthly,drift,performance] [--trainer NAME] [--param KEY=VALUE ...]
        [--source sample|yfinance|csv:PATH] [--workers N] [--out DIR]
        [--gate-policy superiority|non-inferiority] [--gate-noninferiority-margin F]
        [--gate-baseline-rule significance|estimate-and-significance]

Progress bars (tqdm) on stderr, one per ticker; a table on stdout, its last line one JSON object
(`tickers`, `policies`, `by_ticker`, ...); in --out: `days.csv`, `backtest.png`, `summary.json`.
Exit 0 on success, 2 for bad input (with what to send instead).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrain.cli.common import CliError, add_state_dir, prepare_environment

DEFAULT_TICKERS = ("MSFT", "AAPL", "IBM", "GOOG")
DEFAULT_START, DEFAULT_END = "2005-01-03", "2013-03-01"


def add_commands(sub: Any) -> None:
    from retrain.backtest.engine import DEFAULT_POLICIES, POLICIES

    p = sub.add_parser("backtest", help="replay history day by day and compare retraining policies")
    p.add_argument(
        "--ticker", default=",".join(DEFAULT_TICKERS), help="comma-separated tickers (default: %(default)s)"
    )
    p.add_argument(
        "--start", default=DEFAULT_START, help="first forecast day, YYYY-MM-DD (default: %(default)s)"
    )
    p.add_argument("--end", default=DEFAULT_END, help="last forecast day, YYYY-MM-DD (default: %(default)s)")
    p.add_argument(
        "--policies",
        default=",".join(DEFAULT_POLICIES),
        help=f"comma-separated, from {', '.join(POLICIES)} (default: %(default)s)",
    )
    p.add_argument(
        "--trainer", help="a trainer of this repository, e.g. lstm or ridge (default: RETRAIN_TRAINER)"
    )
    p.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="a hyperparameter for the trainer, as a cycle passes it (repeatable); a trainer's backtest "
        "budget (retrain.trainers: backtest_params, the LSTM's 10 epochs) applies unless set here",
    )
    p.add_argument(
        "--source",
        default="sample",
        help="sample (default), yfinance or csv:PATH: fetched once, replayed as of each day",
    )
    p.add_argument(
        "--gate-policy",
        help="the gate's champion policy: superiority or non-inferiority (default: RETRAIN_GATE_POLICY)",
    )
    p.add_argument(
        "--gate-noninferiority-margin",
        help="non-inferiority: tolerated excess over the champion's error, a fraction "
        "(default: RETRAIN_GATE_NONINFERIORITY_MARGIN)",
    )
    p.add_argument(
        "--gate-baseline-rule",
        help="the baseline check: estimate-and-significance (default, today's) or significance (the rule "
        "before gate policies: fails only when significantly worse than naive x (1 + margin))",
    )
    p.add_argument(
        "--workers", type=int, help="processes, one ticker each at a time (default: min(tickers, CPUs))"
    )
    p.add_argument(
        "--out", help="directory for days.csv, backtest.png, summary.json (default: <state dir>/backtest)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_state_dir(p)
    p.set_defaults(func=run)


def _fail(message: str) -> CliError:
    return CliError(message, 2)


def parse_settings(args: argparse.Namespace) -> tuple[list[str], Any]:
    """Validate the command line against the live settings -> (tickers, BacktestSettings)."""
    from retrain.backtest.engine import POLICIES, BacktestSettings
    from retrain.market_data import MarketDataError, parse_as_of, validate_ticker
    from retrain.monitoring.calibration import thresholds_from_settings
    from retrain.settings import get
    from retrain.trainers import TrainerError, get_trainer, param_pairs
    from retrain.workflow import CycleInput

    try:
        tickers = [validate_ticker(t) for t in str(args.ticker).split(",") if t.strip()]
    except MarketDataError as exc:
        raise _fail(f"--ticker: {exc}") from None
    if not tickers:
        raise _fail("--ticker: send one or more tickers, comma-separated, e.g. MSFT,AAPL")
    if len(set(tickers)) != len(tickers):
        raise _fail(f"--ticker: {args.ticker!r} names a ticker twice; send each once")
    try:
        start, end = parse_as_of(args.start), parse_as_of(args.end)
    except MarketDataError as exc:
        raise _fail(f"--start/--end: {exc}") from None
    if start is None or end is None:
        raise _fail("--start and --end: send dates as YYYY-MM-DD")
    if end <= start:
        raise _fail(f"--end {end} is not after --start {start}; send a span of at least a few weeks")
    if end > dt.date.today():
        raise _fail(f"--end {end} is in the future; the backtest replays history only")
    policies = [p.strip() for p in str(args.policies).split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        raise _fail(
            f"--policies: unknown {', '.join(unknown) or '(none given)'}; use some of {', '.join(POLICIES)}"
        )
    if len(set(policies)) != len(policies):
        raise _fail("--policies: a policy is named twice; send each once")
    if "never" in policies:  # the reference: first, so the table and the intervals read against it
        policies = ["never", *[p for p in policies if p != "never"]]
    hyperparameters: dict[str, str] = {}
    for pair in args.param or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise _fail(f"--param {pair!r}: use KEY=VALUE, e.g. max_epochs=5")
        hyperparameters[key] = value
    try:
        cycle = CycleInput.from_settings(
            tickers[0], "timer", trainer=args.trainer, hyperparameters=hyperparameters, source=args.source
        )
        param_pairs(cycle.hyperparameters)
    except TrainerError as exc:
        raise _fail(str(exc)) from None
    gate_policy = _gate_policy(args, cycle.gate_policy_of())
    # The trainer's backtest budget (registry: `backtest_params`) unless the command line sets it.
    backtest_params = get_trainer(cycle.trainer).backtest_params
    params = {
        **cycle.hyperparameters,
        **{k: v for k, v in backtest_params.items() if k not in hyperparameters},
    }
    settings = BacktestSettings(
        start=start,
        end=end,
        policies=tuple(policies),
        trainer=cycle.trainer,
        hyperparameters=params,
        source=cycle.source,
        lookback_days=cycle.lookback_days,
        baseline_margin=cycle.baseline_margin,
        gate_alpha=cycle.gate_alpha,
        gate_metrics=cycle.gate_metrics,
        gate_policy=gate_policy.champion,
        gate_noninferiority_margin=gate_policy.noninferiority_margin,
        gate_baseline_rule=gate_policy.baseline_rule,
        thresholds=thresholds_from_settings(),
        weekly_schedule=str(get("RETRAIN_SCHEDULE")),
    )
    return tickers, settings


def _gate_policy(args: argparse.Namespace, configured: Any) -> Any:
    """The settings' gate policy with the command line's --gate-* options over it (validated)."""
    from retrain.gate import GateError, GatePolicy

    margin: float = configured.noninferiority_margin
    raw_margin = getattr(args, "gate_noninferiority_margin", None)
    if raw_margin is not None:
        try:
            margin = float(raw_margin)
        except ValueError:
            raise _fail(
                f"--gate-noninferiority-margin {raw_margin!r}: send a fraction, e.g. 0.01 for 1 %"
            ) from None
    policy = getattr(args, "gate_policy", None)
    rule = getattr(args, "gate_baseline_rule", None)
    try:
        return GatePolicy(
            champion=str(policy).strip().lower() if policy is not None else configured.champion,
            noninferiority_margin=margin,
            baseline_rule=str(rule).strip().lower() if rule is not None else configured.baseline_rule,
        )
    except GateError as exc:
        raise _fail(f"--gate-*: {exc}") from None


def _ticker_job(ticker: str, settings_dict: dict[str, Any], queue: Any) -> Any:
    """One ticker in a worker process (imports and the trainer module are paid once per process)."""
    from retrain.backtest.engine import BacktestSettings, replay_ticker

    settings = BacktestSettings.from_dict(settings_dict)

    def on_day(n: int) -> None:
        if queue is not None:
            queue.put((ticker, n))

    try:
        return replay_ticker(ticker, settings, on_day=on_day)
    finally:
        if queue is not None:
            queue.put((ticker, None))


def replay_all(tickers: Sequence[str], settings: Any, workers: int, progress: bool) -> list[Any]:
    """Replay each ticker (in `workers` processes when > 1) with one progress bar per ticker."""
    from tqdm import tqdm

    from retrain.backtest.engine import BacktestError, Replay
    from retrain.backtest.fitting import FitError, InProcessTrainer

    try:
        trainer = InProcessTrainer(settings.trainer, settings.hyperparameters)
    except FitError as exc:
        raise _fail(f"--param: {exc}") from None
    # Each ticker's data first: an unknown ticker or a span outside the data fails before any training.
    totals: dict[str, int] = {}
    for ticker in tickers:
        try:
            totals[ticker] = Replay(ticker, settings, trainer).n_days * len(settings.policies)
        except BacktestError as exc:
            raise _fail(str(exc)) from None
    bars = {
        t: tqdm(
            total=totals[t],
            desc=f"{t:<6}",
            unit="day",
            position=i,
            file=sys.stderr,
            disable=not progress,
            leave=True,
        )
        for i, t in enumerate(tickers)
    }
    try:
        if workers <= 1:
            results = []
            for t in tickers:
                try:
                    from retrain.backtest.engine import replay_ticker

                    results.append(replay_ticker(t, settings, trainer, on_day=bars[t].update))
                except BacktestError as exc:
                    raise _fail(str(exc)) from None
            return results
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        context = mp.get_context("spawn")  # no fork of a process that holds torch threads
        manager = context.Manager()
        queue = manager.Queue()
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {t: pool.submit(_ticker_job, t, settings.to_dict(), queue) for t in tickers}
            running = len(tickers)
            while running:
                ticker, n = queue.get()
                if n is None:
                    running -= 1
                else:
                    bars[ticker].update(n)
            out = []
            for t in tickers:
                try:
                    out.append(futures[t].result())
                except BacktestError as exc:
                    raise _fail(str(exc)) from None
        manager.shutdown()
        return out
    finally:
        for bar in bars.values():
            bar.close()


def run(args: argparse.Namespace) -> int:
    from retrain.backtest import report

    started = time.monotonic()
    cpu_started = time.process_time()
    state_dir = prepare_environment(args.state_dir)
    tickers, settings = parse_settings(args)
    workers = args.workers if args.workers is not None else min(len(tickers), os.cpu_count() or 1)
    if workers < 1:
        raise _fail(f"--workers {workers}: send 1 or more")
    out = Path(args.out) if args.out else Path(state_dir) / "backtest"
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"retrain backtest: {', '.join(tickers)} {settings.start}..{settings.end}, policies "
        f"{', '.join(settings.policies)}, trainer {settings.trainer} {settings.hyperparameters}, "
        f"gate {settings.gate_policy} (margin {settings.gate_noninferiority_margin:g}, baseline "
        f"{settings.gate_baseline_rule}), {workers} worker(s), out {out}",
        file=sys.stderr,
        flush=True,
    )
    results = replay_all(tickers, settings, workers, progress=not args.no_progress)
    summary = report.summarise(results, settings.policies)
    elapsed = time.monotonic() - started
    summary.update(
        {
            "start": settings.start.isoformat(),
            "end": settings.end.isoformat(),
            "trainer": settings.trainer,
            "hyperparameters": settings.hyperparameters,
            "distinct_fits": sum(r.distinct_fits for r in results),
            "fit_cpu_s": round(sum(r.fit_cpu_s for r in results), 3),
            "workers": workers,
            "elapsed_s": round(elapsed, 1),
            "settings": settings.to_dict(),
            "files": {
                "days": str(report.write_days_csv(results, out / "days.csv")),
                "plot": str(report.plot(results, summary, out / "backtest.png")),
                "summary": str(out / "summary.json"),
            },
        }
    )
    events = {r.ticker: {p: pr.events for p, pr in r.policies.items()} for r in results}
    report.write_json({**summary, "events": events}, out / "summary.json")
    print(report.table(summary))
    print(
        f"\n{summary['distinct_fits']} distinct fits ({summary['fit_cpu_s']:.1f} CPU s fitting, in "
        f"{workers} process(es)), {time.process_time() - cpu_started:.1f} CPU s in the main process, "
        f"{elapsed:.1f} s wall"
    )
    print(json.dumps(summary), flush=True)
    return 0
