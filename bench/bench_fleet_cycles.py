"""Fleet cycles end to end (issue 22, Speed): from the request to every ticker deployed on one shared
endpoint, through the real local host, ours (one fleet request) against N separate requests (one fleet of
one per ticker, started at once) in the same run.

    .venv/bin/python bench/bench_fleet_cycles.py [--sizes 10 100 200] [--runs 3] [--per-ticker 10]
                                                 [--large 1000] [--lstm 200] [--quick] [--write-figures]

Each measurement starts function_app.py in an in-process `LocalHost` (as `retrain run` does) on the real
local platform, on a fresh state dir with one synthetic CSV per ticker in RETRAIN_DATA_DIR
(RETRAIN_SOURCE=csv:{ticker}.csv, a seeded random walk of 300 trading days each) and the default layout
(every ticker on the one endpoint `fleet-models`). Requests carry `force: true`, so every ticker that
trains is deployed whatever the gate says (first models of random walks would otherwise be rejected now
and then, and "all deployed" is the figure asked for); the gate still judges each one.

- ours: `POST /api/retrain {"tickers": [N tickers]}`, followed until the fleet ends (RETRAIN_TRAINING_BATCH
  and RETRAIN_FLEET_PARALLEL_BATCHES at their defaults), for each N of --sizes (ridge, medians over
  --runs), then --large (ridge) and --lstm (the LSTM with the cycle's default epochs), once each;
- N separate requests: --per-ticker `POST /api/retrain {"ticker"}` posted at once, each a fleet of one
  (its own fleet, batch job and rollout request; a rollout may carry several of them), followed until the
  last ends, in every run; its per-ticker cost (wall / N) is compared with ours at the same N.

Per measurement: wall seconds from the first request to the end; the fit CPU (every ticker's fit timed
in-process, `retrain.backtest.fitting.InProcessTrainer`, on the same closes before the host starts; for
the LSTM a sample of --lstm-fit-sample tickers, scaled to N); overhead per ticker = (wall - fit CPU) / N;
where the fleet's time went (its batches phase and its rollout wait; per batch its slowest steps); and the
durable history per orchestration kind (fleet, largest batch, rollout), read from the host's store as the
engine writes it: events and bytes at its largest (a rollout that continued as new: its largest
generation), the bytes its episodes replayed, and the time its episodes took on the engine's scheduler.
The machine's load average is printed with every row: on a shared machine the walls move with it.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FIGURES_FILE = REPO / "README.md"  # the headline figures of a fleet (issue 22), beside fleet serving's
BLOCK = "fleet-cycles"
sys.path.insert(0, str(REPO))
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

DAYS = 300
QUICK = {"sizes": [3, 6], "runs": 1, "per_ticker": 3, "large": 0, "lstm": 0}
TARGETS = {  # issue 22, Speed: (trainer, N) -> seconds from the request to all deployed
    ("ridge", 200): 180.0,
    ("lstm", 200): 600.0,
    ("ridge", 1000): 600.0,
}
SMOKE_MAX_LATENCY_MS = "10000"  # a batch of 50 instances on a busy 2-core box: the bound is not measured here


def tickers(n: int) -> list[str]:
    return [f"B{i:04d}" for i in range(n)]


# ---- settings and the table (pure; tests/unit/test_bench_fleet_cycles.py) -----------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 200], help="fleet sizes (ridge)")
    parser.add_argument("--runs", type=int, default=3, help="runs of --sizes and --per-ticker (medians)")
    parser.add_argument(
        "--per-ticker",
        type=int,
        default=10,
        help="fleets of one ({ticker} requests) posted at once (0: none)",
    )
    parser.add_argument("--large", type=int, default=1000, help="a ridge fleet measured once (0: none)")
    parser.add_argument("--lstm", type=int, default=200, help="an LSTM fleet measured once (0: none)")
    parser.add_argument("--lstm-fit-sample", type=int, default=5, help="LSTM fits timed for the fit CPU")
    parser.add_argument("--quick", action="store_true", help="a small smoke run: " + json.dumps(QUICK))
    parser.add_argument(
        "--write-figures",
        dest="write_figures",
        action="store_true",
        help=f"also write the {BLOCK} block of {FIGURES_FILE.relative_to(REPO)}",
    )
    parser.add_argument("--figures-file", type=Path, default=FIGURES_FILE, help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (state dirs) to look into")
    return parser


def resolved(args: argparse.Namespace) -> argparse.Namespace:
    """The arguments with --quick applied; a bad value is a ValueError that says what to send."""
    out = argparse.Namespace(**vars(args))
    if out.quick:
        for key, value in QUICK.items():
            setattr(out, key, value)
    problems = []
    if min(out.sizes) < 1:
        problems.append("--sizes: send whole numbers >= 1")
    for key in ("runs", "lstm_fit_sample"):
        if getattr(out, key) < 1:
            problems.append(f"--{key.replace('_', '-')}: send a whole number >= 1")
    for key in ("per_ticker", "large", "lstm"):
        if getattr(out, key) < 0:
            problems.append(f"--{key.replace('_', '-')}: send a whole number >= 0 (0 leaves it out)")
    if problems:
        raise ValueError("; ".join(problems))
    out.sizes = sorted(set(out.sizes))
    return out


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """What the figures depend on (recorded in the block); RETRAIN_* are checked against their defaults."""
    from retrain import settings

    args = resolved(args)
    defaults = settings.declared_defaults()
    return {
        "sizes": args.sizes,
        "runs": args.runs,
        "per_ticker": args.per_ticker,
        "large": args.large,
        "lstm": args.lstm,
        "lstm_fit_sample": args.lstm_fit_sample,
        "data": f"csv:{{ticker}}.csv, a seeded random walk of {DAYS} trading days per ticker",
        "request": "force: true (every ticker that trains is deployed)",
        "smoke_max_latency_ms": SMOKE_MAX_LATENCY_MS,
        **{
            k: defaults[k]
            for k in ("RETRAIN_TRAINING_BATCH", "RETRAIN_FLEET_PARALLEL_BATCHES", "RETRAIN_LOCAL_BATCH_JOBS")
        },
        "RETRAIN_MAX_EPOCHS": defaults["RETRAIN_MAX_EPOCHS"],
    }


def DEFAULT_SETTINGS(block: str) -> dict[str, Any]:  # noqa: N802 (the name readme_figures looks for)
    """What the block records when this script runs with its defaults."""
    return {
        k: v for k, v in settings_of(build_parser().parse_args([])).items() if not k.startswith("RETRAIN_")
    }


def command_of(args: argparse.Namespace) -> str:
    """The command line that reproduces these figures (defaults left out)."""
    defaults = vars(build_parser().parse_args([]))
    words = ["bench/bench_fleet_cycles.py"]
    for key, value in vars(args).items():
        if key in ("write_figures", "figures_file", "keep") or value == defaults[key]:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        else:
            words.append(" ".join([flag, *map(str, value if isinstance(value, list) else [value])]))
    return " ".join(words)


@dataclass
class Measured:
    """One measurement: a fleet of N tickers (ours) or N fleets of one started at once (N requests)."""

    mode: str  # "fleet" or "per-ticker" (N `{ticker}` requests, each a fleet of one)
    trainer: str
    n: int
    wall_s: float
    fit_cpu_s: float
    deployed: int
    rollouts: int  # distinct rollouts that deployed the tickers
    load: tuple[float, float]  # 1-minute load average at the start and at the end
    phases: dict[str, float] = field(default_factory=dict)  # the fleet's timings_s
    batch_steps: dict[str, float] = field(default_factory=dict)  # per step, the slowest batch's seconds
    batches: int = 0
    history: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> events, bytes, replayed, steps
    failed: list[str] = field(default_factory=list)

    @property
    def overhead_per_ticker_s(self) -> float:
        return (self.wall_s - self.fit_cpu_s) / self.n


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _target(m: Measured) -> str:
    limit = TARGETS.get((m.trainer, m.n))
    if limit is None:
        return ""
    return f"<= {limit / 60:.0f} min: {'met' if m.wall_s <= limit else '**missed**'}"


def _load(m: Measured) -> str:
    return f"{m.load[0]:.1f}-{m.load[1]:.1f}"


def median_run(ms: list[Measured]) -> Measured:
    """The measurement whose wall time is the group's median (the lower middle for an even count)."""
    ordered = sorted(ms, key=lambda m: m.wall_s)
    return ordered[(len(ordered) - 1) // 2]


def groups_of(measured: list[Measured]) -> dict[tuple[str, str, int], list[Measured]]:
    """Measurements by (mode, trainer, N): ours first, then N fleets of one; by trainer, then N."""
    out: dict[tuple[str, str, int], list[Measured]] = {}
    for m in sorted(measured, key=lambda m: (m.mode != "fleet", m.trainer != "ridge", m.n)):
        out.setdefault((m.mode, m.trainer, m.n), []).append(m)
    return out


STEPS = (
    "fetch_batch_data",
    "get_champions",
    "submit_batch_training",
    "wait_for_job",
    "judge_batch",
    "register_batch_models",
)


def _history_cell(h: dict[str, dict[str, Any]], kind: str) -> str:
    if kind not in h:
        return "-"
    k = h[kind]
    return f"{k['events']:.0f} / {k['bytes'] / 1e3:.0f} / {k['replayed_bytes'] / 1e6:.1f}"


def markdown(measured: list[Measured], args: argparse.Namespace) -> str:
    """The tables (GitHub markdown) from the measurements."""
    args = resolved(args)
    groups = groups_of(measured)
    say = [
        "From the request to every ticker deployed on one shared endpoint, through the real local host on "
        "the real local platform (in-process `LocalHost`, a runner process per training job, detached "
        "routers and slots); medians over the runs a row counts. Overhead per ticker = (wall - fit CPU) / "
        "N, the fit CPU timed in-process on the same closes. Load: the 1-minute load average at the start "
        "and the end of the median run (2 cores: above 2, other work shared them).",
        "",
        "| cycles | trainer | tickers | runs | wall s | per ticker s | fit CPU s | overhead per ticker s "
        "| batches | rollouts | deployed | load | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (mode, trainer, n), ms in groups.items():
        mid = median_run(ms)
        label = (
            "one fleet (ours)" if mode == "fleet" else "a fleet of one per ticker, all at once (N requests)"
        )
        say.append(
            f"| {label} | {trainer} | {n} | {len(ms)} | {mid.wall_s:.1f} | {mid.wall_s / n:.2f} | "
            f"{mid.fit_cpu_s:.1f} | {_median([m.overhead_per_ticker_s for m in ms]):.2f} | "
            f"{mid.batches or '-'} | {mid.rollouts} | {mid.deployed}/{n} | {_load(mid)} | {_target(mid)} |"
        )
    singles = [ms for (mode, _, _), ms in groups.items() if mode == "per-ticker"]
    if singles:
        n_pt = singles[0][0].n
        pt = median_run(singles[0]).wall_s / n_pt
        same = groups.get(("fleet", "ridge", n_pt))
        ours = f"; ours at the same N: {median_run(same).wall_s / n_pt:.2f} s" if same else ""
        say += [
            "",
            f"N separate requests (`POST {{ticker}}` each, started at once) were measured at N = {n_pt} only "
            f"(each a fleet of one: its own fleet, batch job, runner process and rollout request): "
            f"{pt:.2f} s per ticker{ours}. They share the same 2 cores, so N of them take about N x "
            f"{pt:.2f} s: **extrapolated**, {200 * pt / 60:.1f} min for 200 and {1000 * pt / 60:.1f} min "
            "for 1,000.",
        ]
    by_n = {
        n: _median([m.overhead_per_ticker_s for m in ms])
        for (mode, trainer, n), ms in groups.items()
        if mode == "fleet" and trainer == "ridge"
    }
    if len(by_n) > 1:
        values = list(by_n.values())
        falling = all(a > b for a, b in zip(values, values[1:], strict=False))
        say += [
            "",
            "Overhead per ticker (ridge): "
            + ", ".join(f"N = {n}: {v:.2f} s" for n, v in by_n.items())
            + (": it falls as N grows." if falling else ": it does **not** fall at every step."),
        ]
    say += [
        "",
        "Where a fleet's time went (the median run: its phases, and per step the slowest batch's seconds):",
        "",
        "| trainer | tickers | batches phase s | rollout wait s | slowest batch: fetch / champions / "
        "submit / job / judge / register s |",
        "|---|---|---|---|---|",
    ]
    for (mode, trainer, n), ms in groups.items():
        if mode == "fleet":
            mid = median_run(ms)
            steps = " / ".join(f"{mid.batch_steps.get(s, 0):.1f}" for s in STEPS)
            say.append(
                f"| {trainer} | {n} | {mid.phases.get('batches', 0):.1f} | "
                f"{mid.phases.get('await_rollout', 0):.1f} | {steps} |"
            )
    say += [
        "",
        "Durable history per orchestration (the median run, from the host's store as the engine wrote it: "
        "events / KB at its largest / MB its episodes replayed; episodes' time on the engine's scheduler):",
        "",
        "| cycles | trainer | tickers | fleet (per ticker: the largest fleet of one) | largest batch | rollout "
        "| episodes' time s: fleets / batches / rollouts |",
        "|---|---|---|---|---|---|---|",
    ]
    for (mode, trainer, n), ms in groups.items():
        h = median_run(ms).history
        times = " / ".join(f"{h.get(k, {}).get('scheduler_s', 0):.1f}" for k in ("fleet", "batch", "rollout"))
        say.append(
            f"| {'one fleet' if mode == 'fleet' else 'a fleet of one per ticker'} | {trainer} | {n} | "
            f"{_history_cell(h, 'fleet')} | {_history_cell(h, 'batch')} | {_history_cell(h, 'rollout')} | "
            f"{times} |"
        )
    for (mode, trainer, n), ms in groups.items():
        if mode != "fleet" or n != max(k[2] for k in groups if k[:2] == (mode, trainer)):
            continue
        h = median_run(ms).history
        for kind in ("rollout", "fleet"):
            steps = list((h.get(kind) or {}).get("steps", {}).items())[:6]
            if steps:
                shown = ", ".join(f"`{name}` {seconds:.1f}" for name, seconds in steps)
                say.append(
                    f"\n{trainer}, N = {n}, the {kind}'s steps (seconds from scheduled to done): {shown}."
                )
    failures = [f"{m.mode} {m.trainer} {m.n}: {', '.join(m.failed[:5])}" for m in measured if m.failed]
    if failures:
        say += ["", "Not deployed: " + "; ".join(failures) + "."]
    return "\n".join(say)


def ensure_block(path: Path, name: str = BLOCK, after: str = "<!-- /figures:fleet-serving -->") -> None:
    """Put the block's marker lines under a lead paragraph when they are missing (the first
    --write-figures): after the fleet-serving block when the file has it, else at the end; write_block
    then fills them."""
    text = path.read_text(encoding="utf-8")
    if f"<!-- figures:{name} -->" in text:
        return
    lead = (
        "**Fleet cycles** (`bench/bench_fleet_cycles.py`; issue 22): one fleet request over N tickers against "
        "N separate requests started at once (one `POST {ticker}` each: a fleet of one per ticker, each its "
        "own batch job and rollout request), from the request to every ticker deployed on the shared "
        "endpoint, measured in the same run."
    )
    markers = f"\n{lead}\n\n<!-- figures:{name} -->\n<!-- /figures:{name} -->\n"
    if after in text:
        at = text.index(after) + len(after) + 1
        path.write_text(text[:at] + markers + text[at:], encoding="utf-8")
    else:
        path.write_text(text.rstrip("\n") + "\n" + markers, encoding="utf-8")


# ---- measuring ----------------------------------------------------------------------------------------


def kind_of(instance_id: str) -> str:
    """Which orchestration an instance id names (naming.py's forms)."""
    from retrain import naming

    if naming.parse_batch_instance_id(instance_id) is not None:
        return "batch"
    if instance_id.startswith(naming.FLEET_PREFIX):
        return "fleet"
    if instance_id.startswith("rollout-"):
        return "rollout"
    return "cycle"


class HistoryProbe:
    """Per orchestration kind, as the engine writes: the largest history an instance held (events, bytes;
    a rollout's generations each count), the bytes its episodes replayed, the time they took."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.largest: dict[str, dict[str, float]] = {}
        self.replayed: dict[str, float] = {}  # kind -> bytes replayed
        self.scheduler_s: dict[str, float] = {}
        # kind -> step -> seconds from scheduling to completion (activities; "timer" waits; sub-orchestrations)
        self.steps: dict[str, dict[str, float]] = {}

    def _size(self, conn: Any, instance_id: str) -> tuple[int, int]:
        row = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(event AS BLOB))), 0) FROM history WHERE instance_id=?",
            (instance_id,),
        ).fetchone()
        return int(row[0]), int(row[1])

    def _record(self, instance_id: str, events: int, size: int) -> None:
        kind = kind_of(instance_id)
        with self.lock:
            best = self.largest.get(kind)
            if best is None or size > best["bytes"]:
                self.largest[kind] = {"events": events, "bytes": size}

    def _timed_steps(self, conn: Any, instance_id: str, events: list[dict[str, Any]]) -> None:
        """Add each completed activity's, timer's and sub-orchestration's time (from the event that
        scheduled it, already in the history) to its kind's steps."""
        from datetime import datetime

        for event in events:
            kind = event.get("EventType")
            ref = event.get("TimerId") if kind == 11 else event.get("TaskScheduledId")
            if kind not in (5, 6, 8, 9, 11) or ref is None:
                continue
            row = conn.execute(
                "SELECT event FROM history WHERE instance_id=? AND json_extract(event, '$.EventId')=? "
                "AND json_extract(event, '$.EventType') IN (4, 7, 10)",
                (instance_id, ref),
            ).fetchone()
            if row is None:
                continue
            scheduled = json.loads(row[0])
            try:
                took = (
                    datetime.fromisoformat(event["Timestamp"].replace("Z", "+00:00"))
                    - datetime.fromisoformat(scheduled["Timestamp"].replace("Z", "+00:00"))
                ).total_seconds()
            except (KeyError, ValueError):
                continue
            name = "timer" if kind == 11 else str(scheduled.get("Name"))
            with self.lock:
                steps = self.steps.setdefault(kind_of(instance_id), {})
                steps[name] = steps.get(name, 0.0) + took

    def install(self) -> Callable[[], None]:
        from functions_host.durable import episodes, instances

        append, continue_as_new, run = (
            instances.append_history,
            instances.continue_as_new,
            episodes.EpisodeRunner._run,
        )
        probe = self

        def counted_append(conn: Any, instance_id: str, events: list[dict[str, Any]]) -> None:
            before_events, before_bytes = probe._size(conn, instance_id)
            with probe.lock:  # each episode appends once, after replaying what was there
                kind = kind_of(instance_id)
                probe.replayed[kind] = probe.replayed.get(kind, 0) + before_bytes
            append(conn, instance_id, events)
            probe._timed_steps(conn, instance_id, events)
            after = before_bytes + sum(len(json.dumps(e).encode()) for e in events)
            probe._record(instance_id, before_events + len(events), after)

        def counted_continue(conn: Any, inst: Any, *args: Any) -> None:
            probe._record(inst["instance_id"], *probe._size(conn, inst["instance_id"]))
            continue_as_new(conn, inst, *args)

        def timed_run(runner: Any, instance_id: str) -> None:
            started = time.perf_counter()
            try:
                run(runner, instance_id)
            finally:
                with probe.lock:
                    kind = kind_of(instance_id)
                    probe.scheduler_s[kind] = probe.scheduler_s.get(kind, 0) + time.perf_counter() - started

        instances.append_history = counted_append  # type: ignore[assignment]
        instances.continue_as_new = counted_continue  # type: ignore[assignment]
        episodes.EpisodeRunner._run = timed_run  # type: ignore[method-assign]

        def uninstall() -> None:
            instances.append_history, instances.continue_as_new = append, continue_as_new
            episodes.EpisodeRunner._run = run  # type: ignore[method-assign]

        return uninstall

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            kind: {
                **self.largest[kind],
                "replayed_bytes": self.replayed.get(kind, 0.0),
                "scheduler_s": self.scheduler_s.get(kind, 0.0),
                "steps": dict(sorted(self.steps.get(kind, {}).items(), key=lambda kv: -kv[1])),
            }
            for kind in self.largest
        }


def write_data(folder: Path, names: list[str]) -> dict[str, Any]:
    """One CSV per ticker (a seeded random walk); the closes by ticker."""
    import numpy as np
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    dates = pd.bdate_range(end="2024-12-31", periods=DAYS).strftime("%Y-%m-%d")
    closes = {}
    for i, ticker in enumerate(names):
        returns = np.random.default_rng(1000 + i).normal(0.0003, 0.015, DAYS)
        c = 50.0 * np.exp(np.cumsum(returns) - returns[0])
        frame = {"Date": dates, "Open": c, "High": c * 1.01, "Low": c * 0.99, "Close": c, "Volume": 1_000_000}
        pd.DataFrame(frame).to_csv(folder / f"{ticker}.csv", index=False)
        closes[ticker] = c
    return closes


def fit_cpu(trainer: str, closes: dict[str, Any], sample: int) -> float:
    """Seconds of CPU the fits themselves take (in-process, warmed up), for every ticker of `closes`: all of
    them, or `sample` of them scaled to the whole."""
    from retrain import settings
    from retrain.backtest.fitting import InProcessTrainer

    params = {"max_epochs": settings.get("RETRAIN_MAX_EPOCHS")} if trainer == "lstm" else {}
    fitter = InProcessTrainer(trainer, params)
    series = list(closes.values())
    timed = series[: max(1, min(sample, len(series)))]
    cpu = sum(fitter.fit(c).cpu_s for c in timed)
    return cpu * len(series) / len(timed)


@contextmanager
def local_host(work: Path, trainer: str, names: list[str]) -> Iterator[Any]:
    """The real local host (function_app.py) on the real local platform, on a fresh state dir; every
    endpoint process it started is stopped after."""
    from functions_host.host import LocalHost
    from retrain import adapters
    from retrain.ports import HostsEndpoints
    from retrain.settings import declared_defaults

    env = {
        "RETRAIN_PLATFORM": "local",
        "RETRAIN_STATE_DIR": str(work / "state"),
        "RETRAIN_DATA_DIR": str(work / "prices"),
        "RETRAIN_SOURCE": "csv:{ticker}.csv",
        "RETRAIN_TRAINER": trainer,
        "RETRAIN_TICKERS": ",".join(names[:1]),
        "RETRAIN_SMOKE_MAX_LATENCY_MS": SMOKE_MAX_LATENCY_MS,
    }
    saved = {k: os.environ.get(k) for k in [*env, "RETRAIN_ENDPOINTS", "RETRAIN_LOOKBACK_DAYS"]}
    os.environ.update(env)
    for key in ("RETRAIN_ENDPOINTS", "RETRAIN_LOOKBACK_DAYS"):
        os.environ.pop(key, None)  # their defaults: the shared endpoint, 1825 days (all 300 rows)
    adapters.reset()
    host = LocalHost(
        REPO / "function_app.py",
        work / "state",
        port=0,
        timers=False,
        out=io.StringIO(),
        setting_defaults=declared_defaults(),
    )
    host.start()
    try:
        yield host
    finally:
        try:
            host.stop()
        finally:
            platform = adapters.get_platform()
            if isinstance(platform, HostsEndpoints):
                platform.stop_all(everything=True)
            adapters.reset()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def measure(work: Path, mode: str, trainer: str, n: int, fit_sample: int) -> Measured:
    from retrain.host_client import HostClient

    names = tickers(n)
    closes = write_data(work / "prices", names)
    fit = fit_cpu(trainer, closes, len(names) if trainer != "lstm" else fit_sample)
    probe = HistoryProbe()
    uninstall = probe.install()
    load_start = os.getloadavg()[0]
    try:
        with local_host(work, trainer, names) as host:
            client = HostClient(host.url, host.function_key, timeout=300)
            started = time.perf_counter()
            if mode == "fleet":
                code, answer = client.start_cycle({"tickers": names, "force": True})
                assert code == 202, answer
                ends = [client.follow_cycle(answer["id"], poll_s=1.0, timeout_s=7200)]
                asked = [names]
            else:
                ids = []
                for ticker in names:
                    code, answer = client.start_cycle({"ticker": ticker, "force": True})
                    assert code == 202, answer
                    ids.append(answer["id"])
                ends = [client.follow_cycle(i, poll_s=1.0, timeout_s=7200) for i in ids]
                asked = [[ticker] for ticker in names]
            wall = time.perf_counter() - started
    finally:
        uninstall()
    outcomes: dict[str, dict[str, Any]] = {}
    phases: dict[str, float] = {}
    steps: dict[str, float] = {}
    batches = 0
    for end, its_tickers in zip(ends, asked, strict=True):  # one fleet, or a fleet of one per ticker
        out = end.get("output") or {}
        got = out.get("tickers") or {}
        for ticker in its_tickers:
            # a fleet that failed as a whole has no outcome for its tickers: its runtime status says why
            outcomes[ticker] = got.get(ticker) or {
                "status": out.get("status") or end.get("runtime_status"),
                "error": end.get("error") or out.get("error"),
            }
        if mode == "fleet":
            phases = {k: float(v) for k, v in (out.get("timings_s") or {}).items()}
        batches += len(out.get("batches") or [])
        for batch in out.get("batches") or []:
            for step, seconds in (batch.get("timings_s") or {}).items():
                steps[step] = max(steps.get(step, 0.0), float(seconds))
    deployed = [t for t, o in outcomes.items() if o.get("status") == "deployed"]
    rollouts = {outcomes[t].get("rollout") for t in deployed}
    failed = [
        f"{t} ({o.get('status')}: {str(o.get('error'))[:120]})"
        for t, o in outcomes.items()
        if t not in deployed
    ]
    return Measured(
        mode,
        trainer,
        n,
        wall,
        fit,
        len(deployed),
        len(rollouts),
        (load_start, os.getloadavg()[0]),
        phases,
        steps,
        batches,
        probe.summary(),
        failed,
    )


def row(m: Measured) -> str:
    return (
        f"{m.mode:10} {m.trainer:5} N={m.n:5}  wall {m.wall_s:7.1f} s  per ticker {m.wall_s / m.n:6.2f} s  "
        f"fit CPU {m.fit_cpu_s:6.1f} s  overhead/ticker {m.overhead_per_ticker_s:6.2f} s  deployed "
        f"{m.deployed}/{m.n}  rollouts {m.rollouts}  load {_load(m)}  phases {m.phases}  "
        f"slowest batch {m.batch_steps}  history {json.dumps(m.history)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    raw = parser.parse_args(argv)
    try:
        args = resolved(raw)
    except ValueError as exc:
        parser.error(str(exc))
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    plan: list[tuple[str, str, int]] = []
    for _ in range(args.runs):
        plan += [("fleet", "ridge", n) for n in args.sizes]
        plan += [("per-ticker", "ridge", args.per_ticker)] if args.per_ticker else []
    plan += [("fleet", "ridge", args.large)] if args.large else []
    plan += [("fleet", "lstm", args.lstm)] if args.lstm else []
    print(
        f"bench_fleet_cycles {time.strftime('%Y-%m-%d %H:%M')} UTC; settings {json.dumps(settings_of(raw))}"
    )
    print(f"uptime: load averages {os.getloadavg()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-cycles-"))
    measured: list[Measured] = []
    try:
        for i, (mode, trainer, n) in enumerate(plan):
            folder = work / f"{i:02d}-{mode}-{trainer}-{n}"
            measured.append(measure(folder, mode, trainer, n, args.lstm_fit_sample))
            print(row(measured[-1]), flush=True)
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
        md = markdown(measured, raw)
        if raw.write_figures:
            from bench.readme_figures import write_block

            ensure_block(raw.figures_file)
            write_block(raw.figures_file, BLOCK, md, settings_of(raw), command_of(raw))
        print(f"\n{md}")
    finally:
        if args.keep:
            print(f"state dirs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
