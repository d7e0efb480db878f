"""Training speed and forecast quality of the trainer on the bundled MSFT sample.

Prints one table: wall time and training windows per second for the default configuration
(window 20, hidden 32, batch 64, lr 1e-3, early stopping, 1 torch thread)
  - `trainer/train.py` end to end (process start, imports, training, MLflow logging, model save),
  - the Lightning fit alone,
  - a plain PyTorch loop over the same model class, the same tensors, the same batch size and the same
    number of epochs the Lightning run took (with a validation pass per epoch, as Lightning does),
all measured in the same run (median of --runs), then the forecast quality on the test window:
test MAE, naive (persistence) MAE and their ratio.

    .venv/bin/python bench/bench_training.py [--runs 3] [--lookback-days 1825]
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

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "trainer"))
sys.path.insert(1, str(REPO))  # the trainer kit (trainer_kit/) and retrain

import train  # noqa: E402
from forecast_data import PreparedData, prepare  # noqa: E402
from forecast_net import LSTMForecaster  # noqa: E402
from forecaster_pyfunc import forecast_from_closes  # noqa: E402

from retrain.job_code import kit_pythonpath  # noqa: E402
from trainer_kit.data import load_series  # noqa: E402


def sample_csv(directory: Path, lookback_days: int) -> Path:
    from retrain.market_data import fetch_prices, write_snapshot

    return write_snapshot(
        fetch_prices("MSFT", source="sample", lookback_days=lookback_days), "MSFT", directory
    ).path


def plain_torch_fit(
    data: PreparedData, config: train.TrainConfig, epochs: int
) -> tuple[LSTMForecaster, float]:
    """The reference: a hand-written loop, same model class, data, batch size, optimiser and epochs."""
    torch.manual_seed(config.seed)
    net = LSTMForecaster(hidden_size=config.hidden_size, num_layers=config.num_layers)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    loss_fn = torch.nn.MSELoss()
    tr, va = data.part("train"), data.part("val")
    x_train = torch.as_tensor(data.x[tr], dtype=torch.float32).unsqueeze(-1)
    y_train = torch.as_tensor(data.y[tr], dtype=torch.float32)
    x_val = torch.as_tensor(data.x[va], dtype=torch.float32).unsqueeze(-1)
    y_val = torch.as_tensor(data.y[va], dtype=torch.float32)
    generator = torch.Generator().manual_seed(config.seed)
    best, best_state = float("inf"), None
    started = time.perf_counter()
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(y_train), generator=generator)
        for i in range(0, len(order), config.batch_size):
            idx = order[i : i + config.batch_size]
            optimiser.zero_grad()
            loss = loss_fn(net(x_train[idx]), y_train[idx])
            loss.backward()
            optimiser.step()
        net.eval()
        with torch.no_grad():
            val_loss = float(loss_fn(net(x_val), y_val))
        if val_loss < best:
            best, best_state = val_loss, {k: v.clone() for k, v in net.state_dict().items()}
    seconds = time.perf_counter() - started
    if best_state is not None:
        net.load_state_dict(best_state)
    return net, seconds


def cli_run(csv: Path, directory: Path) -> tuple[float, dict]:
    out = directory / f"cli-{time.monotonic_ns()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = kit_pythonpath(env.get("PYTHONPATH"))
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, str(REPO / "trainer" / "train.py"), "--data", str(csv), "--output", str(out)],
        check=True,
        env=env,
        cwd=directory,
        capture_output=True,
        timeout=900,
    )
    seconds = time.perf_counter() - started
    return seconds, json.loads((out / "metrics.json").read_text())


def test_mae(net: LSTMForecaster, data: PreparedData) -> float:
    test = data.part("test")
    forecast = forecast_from_closes(net, data.scaler, data.input_closes[test])
    return float(np.mean(np.abs(forecast - data.target_closes[test])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lookback-days", type=int, default=1825, help="RETRAIN_LOOKBACK_DAYS default")
    args = parser.parse_args()

    torch.set_num_threads(1)  # the trainer's default (--threads 1)
    config = train.TrainConfig()
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        directory = Path(tmp)
        csv = sample_csv(directory, args.lookback_days)
        data = prepare(load_series(csv).closes, config.window)
        n_train = data.sizes.train

        cli_s, lightning_s, plain_s, epochs_seen, plain_mae = [], [], [], [], []
        metrics: dict = {}
        for _ in range(args.runs):
            seconds, metrics = cli_run(csv, directory)
            cli_s.append(seconds)
            fit = train.fit_lightning(data, config)
            lightning_s.append(fit.seconds)
            epochs_seen.append(fit.epochs)
            net, seconds = plain_torch_fit(data, config, fit.epochs)
            plain_s.append(seconds)
            plain_mae.append(test_mae(net, data))

    epochs = int(statistics.median(epochs_seen))
    windows = n_train * epochs
    med = statistics.median
    print(
        f"MSFT sample: {len(data.closes)} trading days, window {config.window}, "
        f"split train/val/test = {data.sizes.train}/{data.sizes.val}/{data.sizes.test} windows; "
        f"hidden {config.hidden_size}, batch {config.batch_size}, lr {config.learning_rate}, "
        f"max epochs {config.max_epochs} (early stopping after {epochs} epochs, patience {config.patience}); "
        f"1 torch thread; median of {args.runs} runs"
    )
    print(
        "windows/s = training windows x epochs / wall s (the validation pass per epoch is inside the wall time)"
    )
    print()
    print(f"| {'training':<46} | {'wall s':>7} | {'windows/s':>10} | {'vs plain loop':>13} |")
    print(f"|{'-' * 48}|{'-' * 9}|{'-' * 12}|{'-' * 15}|")
    rows = [
        ("trainer/train.py end to end (process, MLflow)", med(cli_s)),
        ("Lightning fit (LightningModule + DataModule)", med(lightning_s)),
        ("plain PyTorch loop, same model/data/epochs", med(plain_s)),
    ]
    for name, seconds in rows:
        print(
            f"| {name:<46} | {seconds:>7.2f} | {windows / seconds:>10,.0f} | {seconds / med(plain_s):>12.2f}x |"
        )
    print()
    print(f"| {'forecast quality, test window (price space)':<46} | {'value':>10} |")
    print(f"|{'-' * 48}|{'-' * 12}|")
    quality = [
        ("test MAE (trainer, default config)", metrics["mae"]),
        ("naive MAE (persistence: tomorrow = today)", metrics["naive_mae"]),
        ("MAE / naive MAE", metrics["mae_vs_naive"]),
        ("test RMSE", metrics["rmse"]),
        ("test MAPE %", metrics["mape"]),
        ("test MAE (plain loop, same epochs)", med(plain_mae)),
    ]
    for name, value in quality:
        print(f"| {name:<46} | {value:>10.4f} |")


if __name__ == "__main__":
    main()
