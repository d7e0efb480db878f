"""The policy backtest's tables of figures (docs/backtest.md), one column group per configuration:
`retrain backtest` itself (the CLI in a subprocess, exactly what a user runs) once per configuration, the
figures side by side.

    python bench/bench_policies.py [--trainer lstm|ridge] [--tickers MSFT,AAPL,IBM,GOOG]
        [--start 2005-01-03] [--end 2013-03-01] [--policies never,weekly,monthly,drift,performance]
        [--configurations default,...] [--workers N] [--write-figures [--figures-file docs/backtest.md]]

Prints the markdown (the pooled policy table and the per-ticker table, each configuration's rows under
each policy, the run time of each configuration); with --write-figures (its old name --write-readme still
works) also writes it into the `<!-- figures:backtest-<trainer> -->` block of docs/backtest.md with the settings it ran with (bench/readme_figures.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The file that holds this script's figures blocks (bench/readme_figures.py).
FIGURES_FILE = REPO / "docs" / "backtest.md"
sys.path.insert(0, str(REPO))

# Each configuration is `retrain backtest` with these arguments added to the common ones.
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "default": {"label": "the current defaults (refit, the default gate policy)", "args": []},
    # The other gate policy on the same refitted models: the evidence for the default (issue 18).
    "non-inferiority": {
        "label": "refit + non-inferiority gate",
        "args": ["--gate-policy", "non-inferiority"],
    },
    # The behaviour before issue 18: the model fitted on the first 70 % of windows served, the superiority
    # gate, the first model's baseline check by significance only.
    "old": {
        "label": "stale 70 % fit + superiority gate (before issue 18)",
        "args": [
            "--param",
            "refit=false",
            "--gate-policy",
            "superiority",
            "--gate-baseline-rule",
            "significance",
        ],
    },
}
ERRORS = "relative to the previous close"  # what the backtest's figures are computed on (report.py)


def _backtest_setting_names() -> list[str]:
    """The retrain settings a backtest reads (the gate's and the monitor's, the lookback, the timer)."""
    from retrain.settings import SETTINGS

    names = [
        s.name
        for s in SETTINGS
        if s.name.startswith(("RETRAIN_GATE_", "RETRAIN_MONITOR_")) and s.name != "RETRAIN_MONITOR_SCHEDULE"
    ]
    return sorted({*names, "RETRAIN_LOOKBACK_DAYS", "RETRAIN_SCHEDULE"})


def _defaults() -> dict[str, Any]:
    from retrain.backtest.engine import DEFAULT_POLICIES
    from retrain.cli.backtest import DEFAULT_END, DEFAULT_START, DEFAULT_TICKERS

    return {
        "tickers": list(DEFAULT_TICKERS),
        "start": DEFAULT_START,
        "end": DEFAULT_END,
        "policies": list(DEFAULT_POLICIES),
        "configurations": list(CONFIGURATIONS),
    }


def _settings(
    trainer: str, tickers: list[str], start: str, end: str, policies: list[str], configs: list[str]
) -> dict[str, Any]:
    from retrain.trainers import get_trainer

    return {
        "configurations": {name: CONFIGURATIONS[name]["args"] for name in configs},
        "end": end,
        "errors": ERRORS,
        "policies": policies,
        "source": "sample",
        "start": start,
        "tickers": tickers,
        "trainer": trainer,
        "trainer_backtest_params": dict(get_trainer(trainer).backtest_params),
    }


def DEFAULT_SETTINGS(block: str) -> dict[str, Any]:  # noqa: N802 (the name readme_figures looks for)
    """What a `backtest-<trainer>` block records when this script runs with its defaults (RETRAIN_*
    settings aside: those are checked against retrain.settings)."""
    trainer = block.removeprefix("backtest-")
    d = _defaults()
    return _settings(trainer, d["tickers"], d["start"], d["end"], d["policies"], d["configurations"])


def run_configuration(name: str, common: list[str], workdir: Path) -> dict[str, Any]:
    """`retrain backtest` with the configuration's arguments; its summary JSON and the wall seconds."""
    out = workdir / name
    command = [
        sys.executable, "-m", "retrain", "backtest", *common, *CONFIGURATIONS[name]["args"],
        "--no-progress", "--out", str(out), "--state-dir", str(workdir / "state"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    print(f"bench_policies: {name}: {shlex.join(command[1:])}", file=sys.stderr, flush=True)
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True, check=False)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"bench_policies: configuration {name!r} failed (exit {done.returncode}); see above")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    summary["wall_s"] = wall
    return summary


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def markdown(summaries: dict[str, dict[str, Any]]) -> str:
    """The pooled table and the per-ticker table, each policy's rows one per configuration."""
    first = next(iter(summaries.values()))
    tickers, policies, reference = first["tickers"], list(first["policies"]), first["reference"]
    lines = [
        f"Pooled over {', '.join(tickers)} (the mean of the per-ticker ratios; every error {ERRORS}):",
        "",
        "| policy | configuration | MAE / naive | vs never [95 % CI] | DM p(better than never) | trainings "
        "| deploys | gate rejections | training CPU s | drift unchecked days |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in policies:
        for name, s in summaries.items():
            v, ref = s["policies"][p], s["policies"][reference]["mae_ratio"]
            lo, hi = v["ci95"]
            vs = "(reference)" if p == reference else f"{v['mae_ratio'] - ref:+.4f} [{lo:+.4f}, {hi:+.4f}]"
            dm = f"{v['dm_vs_never']['p_better']:.3f}" if v.get("dm_vs_never") else ""
            # Days with a served model on which the drift check could not run (drift and monitor policies).
            unchecked = (
                f"{v['drift_unchecked_days']} ({v['drift_unchecked_share']:.1%})"
                if "drift_unchecked_days" in v
                else ""
            )
            lines.append(
                f"| `{p}` | {name} | {v['mae_ratio']:.4f} | {vs} | {dm} | {v['trainings']} | {v['deploys']} "
                f"| {v['rejections']} | {v['train_cpu_s']:.1f} | {unchecked} |"
            )
    lines += [
        "",
        "| MAE / naive (trainings, deploys) [95 % CI vs never] | configuration | "
        + " | ".join(tickers)
        + " |",
        "|---|---|" + "---|" * len(tickers),
    ]
    for p in policies:
        for name, s in summaries.items():
            cells = []
            for t in tickers:
                v = s["by_ticker"][t][p]
                cell = f"{v['mae_ratio']:.4f} ({v['trainings']}, {v['deploys']})"
                if p != reference:
                    lo, hi = v["ci95"]
                    cell += f" [{lo:+.4f}, {hi:+.4f}]"
                cells.append(cell)
            lines.append(f"| `{p}` | {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for name, s in summaries.items():
        firsts = ", ".join(f"{t} {s['by_ticker'][t]['first_model']}" for t in tickers)
        lines.append(
            f"- {name} ({CONFIGURATIONS[name]['label']}; `{shlex.join(CONFIGURATIONS[name]['args']) or 'no extra arguments'}`): "
            f"{_duration(s['wall_s'])} wall, {s['distinct_fits']} distinct fits, {s['fit_cpu_s']:.1f} CPU s "
            f"fitting, {s['workers']} worker(s), hyperparameters {json.dumps(s['hyperparameters'], sort_keys=True)}; "
            f"first models on data through: {firsts}."
        )
    from retrain.backtest.report import MULTIPLICITY_NOTE

    lines += ["", MULTIPLICITY_NOTE]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from retrain.settings import get

    d = _defaults()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--trainer", default=get("RETRAIN_TRAINER"), help="lstm or ridge (default: %(default)s)"
    )
    parser.add_argument("--tickers", default=",".join(d["tickers"]))
    parser.add_argument("--start", default=d["start"])
    parser.add_argument("--end", default=d["end"])
    parser.add_argument("--policies", default=",".join(d["policies"]))
    parser.add_argument(
        "--configurations", default=",".join(d["configurations"]), help=f"of {', '.join(CONFIGURATIONS)}"
    )
    parser.add_argument("--workers", type=int, help="retrain backtest --workers (default: its own)")
    parser.add_argument(
        "--write-figures",
        "--write-readme",  # the name before the figures moved to docs/
        dest="write_figures",
        action="store_true",
        help=f"also write the backtest-<trainer> block of {FIGURES_FILE.relative_to(REPO)}",
    )
    parser.add_argument("--figures-file", "--readme", dest="figures_file", type=Path, default=FIGURES_FILE)
    args = parser.parse_args(argv)
    configs = [c for c in args.configurations.split(",") if c]
    unknown = [c for c in configs if c not in CONFIGURATIONS]
    if unknown or not configs:
        parser.error(
            f"--configurations: unknown {unknown or '(none)'}; use some of {', '.join(CONFIGURATIONS)}"
        )
    tickers = [t for t in args.tickers.split(",") if t]
    policies = [p for p in args.policies.split(",") if p]
    common = ["--ticker", ",".join(tickers), "--start", args.start, "--end", args.end]
    common += ["--policies", ",".join(policies), "--trainer", args.trainer, "--source", "sample"]
    if args.workers is not None:
        common += ["--workers", str(args.workers)]
    with tempfile.TemporaryDirectory(prefix="bench-policies-") as tmp:
        summaries = {name: run_configuration(name, common, Path(tmp)) for name in configs}
    text = markdown(summaries)
    print(text)
    if args.write_figures:
        from bench.readme_figures import write_block

        settings = {name: get(name) for name in _backtest_setting_names()}
        # never first, as retrain backtest orders them (the reference)
        settings.update(
            _settings(
                args.trainer, tickers, args.start, args.end, list(summaries[configs[0]]["policies"]), configs
            )
        )
        command = shlex.join(["bench/bench_policies.py", *(argv if argv is not None else sys.argv[1:])])
        write_block(args.figures_file, f"backtest-{args.trainer}", text, settings, command)
        print(f"bench_policies: wrote block backtest-{args.trainer} of {args.figures_file}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
