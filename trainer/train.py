"""Train the LSTM next-day close forecaster and log it to MLflow (the Azure ML job's entry point).

    python train.py --data CSV --output DIR [--champion-model PATH_OR_URI] [--window 20]
        [--hidden-size 32] [--max-epochs 30] [--learning-rate 1e-3] [--batch-size 64] [--seed 42]
        [--patience 5] [--refit true|false] [--threads N] [--param key=value ...]

A model family behind the trainer contract (docs/trainer-contract.md): its fit (PyTorch Lightning,
seeded and deterministic, on standardised daily log returns) and its pyfunc (forecaster_pyfunc.py with
forecast_net.py and forecast_features.py); the trainer kit (trainer_kit/, copied into the job's code at
submit time) does the rest: the command line, the split, evaluate-then-refit, the MLflow run, the model,
metrics.json, test_errors.json and run.json. This family adds DIR/forecast.png.

Evaluate, then refit: the evaluation model trains on the first 70 % of windows with early stopping on the
next 15 % and is measured on the last 15 %. With `refit=true` (the default) the same configuration is then
trained again, same seed, on ALL windows for the number of epochs the evaluation selected (its best epoch:
early stopping needs a validation set, which the refit no longer has), with the return scaler refitted on
the whole series; THAT model is saved and logged.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from forecast_data import PreparedData, prepare, prepare_refit

from trainer_kit.data import Windows
from trainer_kit.family import (
    Family,
    InProcessFit,
    ModelParts,
    Record,
    TrainerError,
    TrainingDataError,
    log_epoch,
)

__all__ = ["TrainerError", "TrainingDataError"]


@dataclass(frozen=True)
class TrainConfig:
    window: int = 20
    hidden_size: int = 32
    num_layers: int = 1
    max_epochs: int = 30
    learning_rate: float = 1e-3
    batch_size: int = 64
    seed: int = 42
    patience: int = 5
    refit: bool = True  # serve a refit on all windows (False: serve the evaluation model)
    threads: int = 1  # torch CPU threads (a small LSTM is fastest on one)


@dataclass
class FitResult:
    net: Any  # forecast_net.LSTMForecaster with the best validation weights restored
    epochs: int
    best_val_loss: float
    seconds: float
    history: list[dict[str, float]] = field(
        default_factory=list
    )  # one {"epoch","train_loss","val_loss"} per epoch
    best_epoch: int = 0  # epochs up to and including the restored best one (the refit trains this many)
    data: PreparedData | None = None  # what it was fitted on (its scaler serves with it)


# ---------------------------------------------------------------------------------------- training


def quiet_lightning() -> None:
    """No progress bars, summaries or tips in job logs: only warnings and errors."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated.*")
    warnings.filterwarnings("ignore", message=r".*too few batches.*|.*number of training batches.*")


def _seeded_module(data: PreparedData, config: TrainConfig) -> tuple[Any, Any]:
    """A fresh LightningModule and DataModule after seeding: a fit and its refit start alike."""
    import lightning as L
    from forecast_datamodule import ReturnWindowsDataModule
    from forecast_module import LSTMForecasterModule

    quiet_lightning()
    L.seed_everything(config.seed, workers=True, verbose=False)
    module = LSTMForecasterModule(config.hidden_size, config.num_layers, config.learning_rate)
    return module, ReturnWindowsDataModule(data, batch_size=config.batch_size, seed=config.seed)


def _lightning_trainer(root: str, **options: Any) -> Any:
    """A quiet, deterministic CPU Trainer (no logger, checkpoints, progress bar or sanity steps)."""
    import lightning as L

    return L.Trainer(
        accelerator="cpu",
        devices=1,
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
        **options,
    )


def fit_lightning(
    data: PreparedData,
    config: TrainConfig,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> FitResult:
    """Train with Lightning (seeded, deterministic, early stopping on val_loss); restores the best weights."""
    from forecast_module import EpochRecorder
    from lightning.pytorch.callbacks import EarlyStopping

    module, datamodule = _seeded_module(data, config)
    recorder = EpochRecorder(on_epoch)
    with tempfile.TemporaryDirectory(prefix="trainer-") as root:
        trainer = _lightning_trainer(
            root,
            max_epochs=config.max_epochs,
            callbacks=[EarlyStopping(monitor="val_loss", mode="min", patience=config.patience), recorder],
        )
        started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        seconds = time.perf_counter() - started
    if recorder.best_state is not None:
        module.net.load_state_dict(recorder.best_state)
    module.net.eval()
    epochs = len(recorder.history)
    best_epoch = epochs if recorder.best_epoch is None else recorder.best_epoch + 1
    return FitResult(module.net, epochs, recorder.best_val_loss, seconds, recorder.history, best_epoch)


def refit_lightning(data: PreparedData, config: TrainConfig, epochs: int) -> FitResult:
    """Train the same configuration, same seed, on `data` (every window a training window, see
    `prepare_refit`) for exactly `epochs` epochs: no validation loop, no early stopping (nothing is held
    out to stop on), so the evaluation's selected epoch count is the rule."""
    module, datamodule = _seeded_module(data, config)
    with tempfile.TemporaryDirectory(prefix="trainer-") as root:
        trainer = _lightning_trainer(root, max_epochs=epochs, limit_val_batches=0)
        started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        seconds = time.perf_counter() - started
        trained = int(trainer.current_epoch)  # the epochs Lightning actually ran
    module.net.eval()
    return FitResult(module.net, trained, math.nan, seconds, [], trained)


def fit(windows: Windows, config: TrainConfig) -> FitResult:
    """The evaluation model: early stopping on the validation part; per-epoch losses to the run."""
    data = prepare(windows.closes, config.window)

    def on_epoch(epoch: int, train_loss: float, val_loss: float) -> None:
        log_epoch(epoch, train_loss=train_loss, val_loss=val_loss)

    result = fit_lightning(data, config, on_epoch)
    result.data = data
    return result


def refit(windows: Windows, config: TrainConfig, evaluation: FitResult) -> FitResult:
    """The evaluation's best epoch count on every window, the scaler of the whole series."""
    data = prepare_refit(windows.closes, config.window)
    result = refit_lightning(data, config, evaluation.best_epoch)
    result.data = data
    return result


def predict(model: FitResult, closes: np.ndarray) -> np.ndarray:
    from forecaster_pyfunc import forecast_from_closes

    assert model.data is not None
    return forecast_from_closes(model.net, model.data.scaler, closes)


def save(model: FitResult, folder: Path) -> ModelParts:
    import torch
    from forecaster_pyfunc import CONFIG_ARTIFACT, WEIGHTS_ARTIFACT, ForecasterModel

    assert model.data is not None
    weights, config = folder / "weights.pt", folder / "config.json"
    torch.save(model.net.state_dict(), weights)
    config.write_text(
        json.dumps(
            {
                "window": model.data.window,
                "hidden_size": model.net.hidden_size,
                "num_layers": model.net.num_layers,
                "scaler": model.data.scaler.to_dict(),
            }
        )
    )
    return ModelParts(ForecasterModel(), {WEIGHTS_ARTIFACT: str(weights), CONFIG_ARTIFACT: str(config)})


def requirements() -> list[str]:
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}"]


def record(fitted: InProcessFit) -> Record:
    config, fit, served = fitted.config, fitted.evaluation, fitted.served
    refitted = {"refit_epochs": served.epochs} if config.refit else {}
    return Record(
        params=asdict(config),
        metrics={
            "epochs_trained": fit.epochs,
            "best_val_loss": fit.best_val_loss,
            "fit_seconds": fit.seconds,
            **({**refitted, "refit_seconds": served.seconds} if config.refit else {}),
        },
        report={"epochs_trained": fit.epochs, "best_val_loss": fit.best_val_loss, **refitted},
        metadata={
            "hidden_size": config.hidden_size,
            "num_layers": config.num_layers,
            "n_train": served.data.sizes.train,
        },
    )


def in_process_setup(threads: int) -> None:
    """A process that fits in-process (the backtest, a job's run): torch's threads, Lightning's banners off."""
    import torch

    torch.set_num_threads(threads)  # the --threads default: a small LSTM is fastest on one
    quiet_lightning()


def plot_forecast(
    actual: np.ndarray, forecast: np.ndarray, previous: np.ndarray, metrics: dict[str, float], path: Path
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    days = np.arange(len(actual))
    ax.plot(days, actual, label="actual close", color="black", linewidth=1.2)
    ax.plot(days, forecast, label=f"forecast (MAE {metrics['mae']:.3f})", color="tab:blue", linewidth=1.0)
    ax.plot(
        days,
        previous,
        label=f"naive: previous close (MAE {metrics['naive_mae']:.3f})",
        color="tab:orange",
        linewidth=0.8,
        alpha=0.7,
        linestyle="--",
    )
    ax.set_xlabel("test trading day")
    ax.set_ylabel("close")
    ax.set_title(
        f"Next-day close forecast vs actual, test window (MAE / naive = {metrics['mae_vs_naive']:.3f})"
    )
    ax.legend(loc="best")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


FAMILY = Family(
    name="lstm",
    folder=Path(__file__).resolve().parent,
    description="Train the LSTM next-day close forecaster and log it to MLflow.",
    representation="standardised daily log returns -> next-day log return; forecast = last close * exp(return)",
    model_code_files=("forecaster_pyfunc.py", "forecast_net.py", "forecast_features.py"),
    make_config=lambda values: TrainConfig(**values),
    fit=fit,
    refit=refit,
    predict=predict,
    save=save,
    record=record,
    requirements=requirements,
    setup=in_process_setup,
    extra_outputs=lambda output, forecast, actual, naive, metrics: [
        plot_forecast(actual, forecast, naive, metrics, output / "forecast.png")
    ],
)
# The contract's entries (docs/trainer-contract.md): the job's and the batch runner's, and the backtest's.
parse_args, config_from_params, run, main = (
    FAMILY.parse_args,
    FAMILY.config_from_params,
    FAMILY.run,
    FAMILY.main,
)
fit_closes = FAMILY.fit_closes

if __name__ == "__main__":
    sys.exit(main())
