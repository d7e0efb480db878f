"""Why the policy backtest fits in-process: one training in-process vs a training job's subprocess.

    python bench/bench_backtest.py [--runs 3] [--trainers lstm,ridge] [--ticker MSFT]

For each trainer, `--runs` trainings on consecutive weekly as-of snapshots of the bundled sample (the
backtest's own data path: `Replay.as_of`), each done two ways on the same data and hyperparameters:
- in-process: `retrain.backtest.fitting.InProcessTrainer.fit` (the trainer's `fit_closes`; imports
  and a warm-up paid once, before timing);
- subprocess: `python <trainer>/train.py --data CSV --output DIR --param ...`, what the local platform
  runs per cycle (process start, imports, MLflow run and model save, metrics, plots).
Prints the median wall and CPU seconds per training and the ratio to in-process (the reference), and
what the default backtest's fit count would cost each way.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--trainers", default="lstm,ridge")
    parser.add_argument("--ticker", default="MSFT")
    args = parser.parse_args()

    from retrain.backtest import engine
    from retrain.backtest.fitting import InProcessTrainer
    from retrain.cli.backtest import parse_settings
    from retrain.job_code import kit_pythonpath
    from retrain.trainers import get_trainer, param_args

    rows = []
    for name in args.trainers.split(","):
        ns = argparse.Namespace(
            ticker=args.ticker,
            start="2008-01-02",
            end="2008-12-31",
            policies="never",
            trainer=name,
            param=None,
            source="sample",
        )
        _, settings = parse_settings(ns)
        trainer = InProcessTrainer(name, settings.hyperparameters)  # imports + warm-up, not timed
        replay = engine.Replay(args.ticker, settings, trainer)
        fridays = [
            j
            for j in range(replay.first_forecast, replay.last_forecast)
            if replay.day64[j].astype(object).weekday() == 4
        ]
        in_wall, in_cpu, sub_wall, sub_cpu = [], [], [], []
        for j in fridays[: args.runs]:
            first_row, closes = replay.as_of(j)
            started = time.perf_counter()
            fitted = trainer.fit(closes)
            in_wall.append(time.perf_counter() - started)
            in_cpu.append(fitted.cpu_s)
            with tempfile.TemporaryDirectory() as tmp:
                csv = Path(tmp) / "data.csv"
                replay.prices.iloc[first_row : j + 1].to_csv(csv, index=False)
                command = [
                    sys.executable,
                    str(get_trainer(name).script_path()),
                    "--data",
                    str(csv),
                    "--output",
                    str(Path(tmp) / "out"),
                    *param_args(settings.hyperparameters),
                ]
                env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
                env["PYTHONPATH"] = kit_pythonpath(env.get("PYTHONPATH"))  # the kit from the root
                before = os.times()
                started = time.perf_counter()
                subprocess.run(
                    command, check=True, capture_output=True, env=env, cwd=get_trainer(name).folder_path()
                )
                sub_wall.append(time.perf_counter() - started)
                after = os.times()
                sub_cpu.append(
                    (after.children_user - before.children_user)
                    + (after.children_system - before.children_system)
                )
        rows.append((name, settings.hyperparameters, in_wall, in_cpu, sub_wall, sub_cpu))

    load = os.getloadavg()
    print(
        f"median of {args.runs} trainings each ({args.ticker}, weekly as-of snapshots of 2008, lookback "
        f"{settings.lookback_days} days); load average {load[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"{'trainer':<8} {'how':<32} {'wall s':>8} {'CPU s':>8} {'wall vs in-process':>19} {'CPU vs in-process':>18}"
    )
    for name, params, in_wall, in_cpu, sub_wall, sub_cpu in rows:
        ref = statistics.median(in_wall)
        print(
            f"{name:<8} {'in-process fit_closes':<32} {ref:>8.3f} {statistics.median(in_cpu):>8.3f} {1.0:>18.1f}x"
        )
        sub = statistics.median(sub_wall)
        print(
            f"{name:<8} {'subprocess train.py (a job)':<32} {sub:>8.3f} {statistics.median(sub_cpu):>8.3f} {sub / ref:>18.1f}x"
        )
        print(f"{'':<8} hyperparameters {params}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
