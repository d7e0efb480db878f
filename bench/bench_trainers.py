"""The shipped trainers side by side on the bundled MSFT sample: end-to-end wall time of one training
job (process start, imports, fit, MLflow logging, model save) and test quality, each trainer run the same
way the local platform runs it (`<folder>/train.py --data CSV --output DIR`, its own SQLite MLflow store).

Prints one table, median of --runs per trainer; the reference is the default trainer (lstm) measured in
the same run.

    .venv/bin/python bench/bench_trainers.py [--runs 3] [--lookback-days 1500] [--lstm-max-epochs 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from retrain.job_code import kit_pythonpath  # noqa: E402
from retrain.market_data import fetch_prices, write_snapshot  # noqa: E402
from retrain.trainers import DEFAULT_TRAINER, TRAINERS  # noqa: E402


def one_run(script: Path, data: Path, work: Path, params: list[str]) -> tuple[float, dict]:
    output = Path(tempfile.mkdtemp(prefix="out-", dir=work))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = kit_pythonpath(
        env.get("PYTHONPATH")
    )  # train.py from its folder: the kit from the root
    command = [sys.executable, str(script), "--data", str(data), "--output", str(output)]
    for param in params:
        command += ["--param", param]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env, cwd=work, timeout=1800)
    seconds = time.perf_counter() - started
    return seconds, json.loads((output / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lookback-days", type=int, default=1500)
    parser.add_argument("--lstm-max-epochs", type=int, default=30)
    args = parser.parse_args()
    params = {"lstm": [f"max_epochs={args.lstm_max_epochs}"]}
    with tempfile.TemporaryDirectory(prefix="bench-trainers-") as tmp:
        work = Path(tmp)
        prices = fetch_prices("MSFT", source="sample", lookback_days=args.lookback_days)
        data = write_snapshot(prices, "MSFT", work).path
        times: dict[str, list[float]] = {name: [] for name in TRAINERS}
        metrics: dict[str, dict] = {}
        for _ in range(args.runs):  # interleaved, so both trainers see the same machine load
            for name, trainer in TRAINERS.items():
                seconds, metrics[name] = one_run(trainer.script_path(), data, work, params.get(name, []))
                times[name].append(seconds)
    reference = statistics.median(times[DEFAULT_TRAINER])
    print(
        f"MSFT sample, {len(prices)} trading days, median of {args.runs} runs (lstm max_epochs {args.lstm_max_epochs})"
    )
    print(
        f"{'trainer':8} {'family':8} {'wall s':>8} {'vs lstm':>8} {'test MAE':>9} {'naive MAE':>10} {'MAE/naive':>10}"
    )
    for name, trainer in TRAINERS.items():
        wall = statistics.median(times[name])
        m = metrics[name]
        print(
            f"{name:8} {trainer.model_family:8} {wall:8.2f} {wall / reference:7.2f}x {m['mae']:9.4f} "
            f"{m['naive_mae']:10.4f} {m['mae'] / m['naive_mae']:10.4f}"
        )


if __name__ == "__main__":
    main()
