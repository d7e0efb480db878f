"""Azure training: jobs and node-minutes per weekly cycle for N tickers, batched (one command job per batch
of RETRAIN_TRAINING_BATCH tickers) against one job per ticker, from per-ticker times MEASURED here.

    python bench/azure_training_costs.py [--tickers 10,100,500] [--batch-size 50] [--job-overhead-minutes 3]
                                         [--families ridge,lstm] [--measure-tickers 3] [--write-figures]

What is measured: for each family, the kit's batch runner (`trainer_kit/batch.py`, from the job code
`retrain.job_code` assembles, exactly what a batch job runs) trains `--measure-tickers` copies of the bundled
sample (RETRAIN_LOOKBACK_DAYS of MSFT) in one process with the cycle's default hyperparameters (the LSTM:
RETRAIN_MAX_EPOCHS, with early stopping). A wrapper times each ticker's `train_one` (fit, evaluation,
model save, MLflow logging: the per-ticker work of a job) and the whole process; the process's time outside
the tickers is its set-up (interpreter, imports of torch / Lightning / MLflow / scikit-learn, the MLflow
run): a job pays it once, whatever its tickers. A node's time is taken as the shorter of the wall and the
CPU time measured (the wall is inflated when other processes share this machine's cores, the CPU time when
torch trains on several threads).

What is not measured: Azure ML's own start-up of a job on the cluster (queueing, node allocation, image
pull, mounting inputs, uploading outputs). No Microsoft page available offline gives a figure for it, so it
is a flag, `--job-overhead-minutes`, whose default (3) is an ASSUMPTION of this script, not a Microsoft
figure: replace it with your own (a job's studio page shows when it was queued, started and ended). The
table prints the value it used.

Counting, per family and N: batched = ceil(N / batch size) jobs, one job per ticker = N jobs; node-minutes
= jobs x (start-up overhead + measured set-up) + N x measured per-ticker time, on one node per job (the
cluster's nodes run jobs in parallel: the node-minutes are the same, only the wall time shrinks). Not
counted, the same for both: the cluster's idle time before it scales down
(`idle_time_before_scale_down=900` s in `retrain/azureml/entities.py`). The times are this machine's
(printed with the table); a node of another size scales them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from retrain import settings  # noqa: E402 (after the path fix)
from retrain.job_code import assemble_job_code  # noqa: E402
from retrain.trainers import default_hyperparameters, get_trainer, param_args  # noqa: E402

FIGURES_FILE = REPO / "docs" / "azure.md"
BLOCK = "azure-training-costs"
DEFAULT_BATCH = 50  # RETRAIN_TRAINING_BATCH's default (docs/architecture.md, fleet cycles)
DEFAULT_OVERHEAD_MIN = 3.0  # an assumption, not a Microsoft figure (see the module docstring)

# Runs inside the job's code folder: the batch runner's own main, with each ticker's train_one timed.
_DRIVER = r"""
import json, sys, time
sys.path.insert(0, ".")
import trainer_kit.batch as batch
timed = []
original = batch.train_one
def train_one(*args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    outcome = original(*args, **kwargs)
    timed.append([time.perf_counter() - wall, time.process_time() - cpu, outcome["status"]])
    return outcome
batch.train_one = train_one
code = batch.main(sys.argv[1:])
print("TIMES " + json.dumps(timed), flush=True)
sys.exit(code)
"""


@dataclass(frozen=True)
class Measurement:
    """One family's times on this machine (seconds)."""

    family: str
    tickers: int
    per_ticker_s: float  # mean wall time of one ticker's work inside the job
    per_ticker_cpu_s: float
    setup_s: float  # the job process's wall time outside its tickers (imports, MLflow run, exit)
    setup_cpu_s: float

    # A dedicated node's time: the shorter of wall and CPU time. On this shared machine the wall time is
    # inflated when other processes compete for the cores; the CPU time is when torch runs several threads.
    @property
    def node_ticker_s(self) -> float:
        return min(self.per_ticker_s, self.per_ticker_cpu_s)

    @property
    def node_setup_s(self) -> float:
        return min(self.setup_s, self.setup_cpu_s)


@dataclass(frozen=True)
class Inputs:
    batch_size: int = DEFAULT_BATCH
    job_overhead_minutes: float = DEFAULT_OVERHEAD_MIN


@dataclass(frozen=True)
class Row:
    tickers: int
    family: str
    mode: str  # "batched (B)" or "one job per ticker"
    jobs: int
    node_minutes: float
    startup_minutes: float  # the part paid per job: Azure's start-up + the job's own set-up

    @property
    def per_ticker_minutes(self) -> float:
        return self.node_minutes / self.tickers


def row(n: int, m: Measurement, inputs: Inputs, batched: bool) -> Row:
    jobs = math.ceil(n / inputs.batch_size) if batched else n
    startup = jobs * (inputs.job_overhead_minutes * 60.0 + m.node_setup_s)
    total = startup + n * m.node_ticker_s
    mode = f"batched ({inputs.batch_size} a job)" if batched else "one job per ticker"
    return Row(n, m.family, mode, jobs, total / 60.0, startup / 60.0)


def table(ns: list[int], measurements: list[Measurement], inputs: Inputs) -> list[Row]:
    return [row(n, m, inputs, batched) for m in measurements for n in ns for batched in (True, False)]


def markdown(rows: list[Row], measurements: list[Measurement], inputs: Inputs) -> str:
    head = [
        "tickers",
        "family",
        "training jobs",
        "jobs",
        "node-minutes",
        "of which per-job start-up",
        "per ticker",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(
            f"| {r.tickers} | {r.family} | {r.mode} | {r.jobs} | {r.node_minutes:,.1f} | "
            f"{r.startup_minutes:,.1f} | {r.per_ticker_minutes:.2f} |"
        )
    measured = "; ".join(
        f"{m.family}: {m.node_ticker_s:.2f} s a ticker (wall {m.per_ticker_s:.2f} s, CPU "
        f"{m.per_ticker_cpu_s:.2f} s), set-up {m.node_setup_s:.1f} s a job (wall {m.setup_s:.1f} s, CPU "
        f"{m.setup_cpu_s:.1f} s), mean of {m.tickers} tickers"
        for m in measurements
    )
    lines += [
        "",
        f"Measured here (one batch process per family; a node's time is the shorter of wall and CPU time: "
        f"the wall is inflated on a shared machine, the CPU time by torch's threads): {measured}. Per-job start-up on Azure ML "
        f"(queueing, node, image, mounts; not measured): **{inputs.job_overhead_minutes:g} min, an assumption** "
        "(`--job-overhead-minutes`; no Microsoft figure). Node-minutes = jobs x (start-up + set-up) + "
        "tickers x per-ticker time, one node per job; the cluster's idle minutes before scale-down are "
        "not counted (the same for both).",
    ]
    return "\n".join(lines)


def sample_data(folder: Path, lookback_days: int) -> Path:
    from retrain.market_data import fetch_prices, write_snapshot

    return write_snapshot(
        fetch_prices("MSFT", source="sample", lookback_days=lookback_days), "MSFT", folder
    ).path


def measure(family: str, tickers: int, work: Path, lookback_days: int) -> Measurement:
    """Train `tickers` copies of the sample in one batch process of `family`; the times of it."""
    trainer = get_trainer(family)
    code = assemble_job_code(trainer.folder_path(REPO), work / "code")
    inputs, output = work / "inputs", work / "outputs"
    inputs.mkdir(parents=True)
    csv = sample_data(work / "data", lookback_days)
    names = [f"T{i:03d}" for i in range(tickers)]
    for name in names:
        (inputs / f"{name}.csv").write_bytes(csv.read_bytes())
    manifest = {"tickers": [{"ticker": t, "data": f"{t}.csv"} for t in names]}
    (inputs / "batch.json").write_text(json.dumps(manifest), encoding="utf-8")
    params = param_args(default_hyperparameters(trainer, {}))  # the declared defaults, not this shell's
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("MLFLOW_")}
    argv = [sys.executable, "-c", _DRIVER, "--inputs", str(inputs), "--output", str(output), *params]
    before = os.times()
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=code, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - started
    after = os.times()
    if done.returncode != 0:
        raise RuntimeError(f"the {family} batch failed ({done.returncode}): {done.stderr[-2000:]}")
    times = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("TIMES "))[6:])
    if any(status != "ok" for *_, status in times):
        raise RuntimeError(f"a {family} ticker failed: see {output / 'batch_summary.json'}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    ticker_wall = [t[0] for t in times]
    ticker_cpu = [t[1] for t in times]
    return Measurement(
        family=family,
        tickers=tickers,
        per_ticker_s=statistics.fmean(ticker_wall),
        per_ticker_cpu_s=statistics.fmean(ticker_cpu),
        setup_s=max(0.0, wall - sum(ticker_wall)),
        setup_cpu_s=max(0.0, cpu - sum(ticker_cpu)),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickers", default="10,100,500", help="portfolio sizes N, comma-separated")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH,
        help="tickers a batch job trains (RETRAIN_TRAINING_BATCH)",
    )
    parser.add_argument(
        "--job-overhead-minutes",
        type=float,
        default=DEFAULT_OVERHEAD_MIN,
        help="Azure ML's start-up of one job on a node, in minutes (an assumption: pass your own)",
    )
    parser.add_argument("--families", default="ridge,lstm", help="trainers to measure, comma-separated")
    parser.add_argument(
        "--measure-tickers", type=int, default=3, help="tickers each family's measurement trains"
    )
    parser.add_argument("--markdown", action="store_true", help="print the GitHub markdown table")
    parser.add_argument(
        "--write-figures",
        dest="write_figures",
        action="store_true",
        help=f"also write the {BLOCK} block of {FIGURES_FILE.relative_to(REPO)}",
    )
    parser.add_argument("--figures-file", type=Path, default=FIGURES_FILE, help=argparse.SUPPRESS)
    return parser


def inputs_of(args: argparse.Namespace) -> tuple[list[int], list[str], Inputs]:
    """The sizes, families and inputs of the parsed flags; a bad value says what to send."""
    try:
        ns = [int(n) for n in args.tickers.split(",")]
    except ValueError:
        raise ValueError(f"--tickers {args.tickers!r}: send whole numbers, e.g. 10,100,500") from None
    if not ns or min(ns) < 1:
        raise ValueError(f"--tickers {args.tickers!r}: send numbers >= 1, e.g. 10,100,500")
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    for family in families:
        get_trainer(family)  # a TrainerError (a ValueError) names the trainers there are
    if not families:
        raise ValueError("--families: send trainer names, e.g. ridge,lstm")
    if args.batch_size < 1 or args.measure_tickers < 1:
        raise ValueError("--batch-size and --measure-tickers: send whole numbers >= 1")
    if not math.isfinite(args.job_overhead_minutes) or args.job_overhead_minutes < 0:
        raise ValueError("--job-overhead-minutes: send minutes >= 0 (your jobs' start-up on the cluster)")
    return ns, families, Inputs(args.batch_size, args.job_overhead_minutes)


def settings_of(args: argparse.Namespace) -> dict[str, object]:
    """What the figures depend on (recorded in the block)."""
    ns, families, inputs = inputs_of(args)
    return {
        "tickers": ns,
        "families": families,
        "batch_size": inputs.batch_size,
        "job_overhead_minutes": inputs.job_overhead_minutes,
        "measure_tickers": args.measure_tickers,
        "RETRAIN_LOOKBACK_DAYS": settings.get("RETRAIN_LOOKBACK_DAYS", {}),
        "RETRAIN_MAX_EPOCHS": settings.get("RETRAIN_MAX_EPOCHS", {}),
    }


def DEFAULT_SETTINGS(block: str) -> dict[str, object]:  # noqa: N802 (the name readme_figures looks for)
    """What the block records when this script runs with its defaults (RETRAIN_* settings are checked
    against retrain.settings' declared defaults instead)."""
    recorded = settings_of(build_parser().parse_args([]))
    return {key: value for key, value in recorded.items() if not key.startswith("RETRAIN_")}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        ns, families, inputs = inputs_of(args)
    except ValueError as exc:
        parser.error(str(exc))
    lookback = settings.get_int("RETRAIN_LOOKBACK_DAYS", {})
    measurements = []
    with tempfile.TemporaryDirectory(prefix="training-costs-") as work:
        for family in families:
            print(f"measuring {family} on {args.measure_tickers} tickers ...", file=sys.stderr, flush=True)
            measurements.append(measure(family, args.measure_tickers, Path(work) / family, lookback))
    md = markdown(table(ns, measurements, inputs), measurements, inputs)
    if args.write_figures:
        from bench.readme_figures import write_block

        defaults = build_parser().parse_args([])
        command = "bench/azure_training_costs.py" + "".join(
            f" --{key.replace('_', '-')} {value}"
            for key, value in sorted(vars(args).items())
            if key not in ("write_figures", "markdown", "figures_file") and value != getattr(defaults, key)
        )
        write_block(args.figures_file, BLOCK, md, settings_of(args), command)
    if args.markdown or args.write_figures:
        print(f"settings: {json.dumps(settings_of(args))}\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
