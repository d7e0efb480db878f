"""Train the next-day close forecaster and log it to MLflow (the Azure ML job's entry point).

    python trainer/train.py --data CSV --output DIR [--champion-model PATH_OR_URI] [--window 20]
        [--hidden-size 32] [--max-epochs 30] [--learning-rate 1e-3] [--batch-size 64] [--seed 42]
        [--patience 5] [--refit true|false] [--threads N] [--param key=value ...]

Self-contained: imports nothing from the `retrain` package. Tracking follows MLflow's environment
(MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME, MLFLOW_RUN_ID as Azure ML sets them inside a job); with no
MLFLOW_TRACKING_URI it logs to a SQLite store `DIR/mlflow.db` with artifacts under `DIR/mlartifacts/`.
Writes DIR/model/ (MLflow pyfunc), DIR/metrics.json, DIR/test_errors.json (per test day: date, actual,
model, naive and champion next close), DIR/forecast.png and DIR/run.json.

Evaluate, then refit (docs/trainer-contract.md): the evaluation model trains on the first 70 % of windows
with early stopping on the next 15 % and is measured on the last 15 % (metrics.json, test_errors.json).
With `refit=true` (the default) the same configuration is then trained again, same seed, on ALL windows
for the number of epochs the evaluation selected (its best epoch: early stopping needs a validation set,
which the refit no longer has), with the return scaler refitted on the whole series; THAT model is saved
and logged. `refit=false` serves the evaluation model (the behaviour before refits). The run records both
fit ends (`evaluation_fit_end`, `fitted_data_end`: the last target dates each model was fitted on).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from forecast_data import PreparedData, TrainingDataError, load_closes, prepare

TRAINER_DIR = Path(__file__).resolve().parent
# What the model directory carries so it loads without trainer/ on sys.path.
MODEL_CODE_FILES = ("forecaster_pyfunc.py", "forecast_net.py", "forecast_features.py")
DEFAULT_EXPERIMENT = "forecaster"


class TrainerError(RuntimeError):
    """A failure with a clear cause (bad arguments, unusable champion, occupied output)."""


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


# --------------------------------------------------------------------------------------------- CLI


# Every hyperparameter this trainer takes (as a flag or `--param key=value`), with its type, bounds and
# default: declared in hyperparameters.json beside this script (the trainer contract); the edge enforces the
# same bounds before a job starts.
HYPERPARAMETERS: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).resolve().parent / "hyperparameters.json").read_text(encoding="utf-8")
)
_BOOLEAN_TEXT = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def bounded(key: str) -> Callable[[str], Any]:
    """The argparse type of hyperparameter `key`: its declared type within its declared bounds."""
    spec = HYPERPARAMETERS[key]
    kind, low, high = spec["type"], spec.get("min"), spec.get("max")

    def convert(text: str) -> Any:
        if kind == "bool":
            value = _BOOLEAN_TEXT.get(text.strip().lower())
            if value is None:
                raise argparse.ArgumentTypeError(f"expected true or false, got {text}")
            return value
        expected = f"{'an integer' if kind == 'int' else 'a number'} from {low} to {high}"
        try:
            number = int(text) if kind == "int" else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}") from None
        if not math.isfinite(number) or not low <= number <= high:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return number

    convert.__name__ = key
    return convert


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = TrainConfig()
    p = argparse.ArgumentParser(description="Train the LSTM next-day close forecaster and log it to MLflow.")
    p.add_argument("--data", required=True, type=Path, help="CSV with Date (ascending) and Close columns")
    p.add_argument(
        "--output", required=True, type=Path, help="directory for model/, metrics.json, forecast.png"
    )
    p.add_argument("--champion-model", default=None, help="MLflow model dir or URI of the current champion")
    p.add_argument("--window", type=bounded("window"), default=d.window, help="closes per input window")
    p.add_argument("--hidden-size", type=bounded("hidden_size"), default=d.hidden_size)
    p.add_argument("--num-layers", type=bounded("num_layers"), default=d.num_layers)
    p.add_argument("--max-epochs", type=bounded("max_epochs"), default=d.max_epochs)
    p.add_argument("--learning-rate", type=bounded("learning_rate"), default=d.learning_rate)
    p.add_argument("--batch-size", type=bounded("batch_size"), default=d.batch_size)
    p.add_argument("--seed", type=bounded("seed"), default=d.seed)
    p.add_argument(
        "--patience", type=bounded("patience"), default=d.patience, help="early-stopping patience (epochs)"
    )
    p.add_argument(
        "--refit",
        type=bounded("refit"),
        default=d.refit,
        help="after the evaluation, serve the configuration retrained on all windows for the selected "
        "number of epochs (true, default) or the evaluation model itself (false)",
    )
    p.add_argument(
        "--threads",
        type=bounded("threads"),
        default=1,
        help="torch CPU threads (a small LSTM is fastest on one; default 1)",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a hyperparameter as key=value, repeatable (the trainer contract's generic form): any flag "
        "above with '_' for '-', e.g. max_epochs=5; wins over the flag",
    )
    args = p.parse_args(argv)
    # The orchestration passes hyperparameters generically; each one is parsed like its own flag.
    tunable = {
        a.dest: a for a in p._actions if a.dest not in ("help", "data", "output", "champion_model", "param")
    }
    for pair in args.param:
        key, sep, value = pair.partition("=")
        if not sep or key not in tunable:
            p.error(f"--param {pair!r}: use key=value with key one of {', '.join(sorted(tunable))}")
        convert = tunable[key].type or str
        try:
            setattr(args, key, convert(value))
        except (argparse.ArgumentTypeError, ValueError) as exc:
            p.error(f"--param {key}={value!r}: {exc}")
    return args


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        window=args.window,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        max_epochs=args.max_epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        seed=args.seed,
        patience=args.patience,
        refit=args.refit,
    )


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


@dataclass
class InProcessFit:
    """A model fitted in memory: what `run` saves and logs, and what the policy backtest
    (`retrain backtest`) replays without a process or MLflow per training.

    Two predictors, each the served numpy path ((n, window) closes -> (n,) next closes):
    `evaluation_predict` is the model measured on the test days (metrics, test_errors.json, the gate);
    `served_predict` is the model that is saved and serves (the refit; the same one with refit=false)."""

    window: int
    evaluation_predict: Callable[[np.ndarray], np.ndarray]
    served_predict: Callable[[np.ndarray], np.ndarray]
    test_days: np.ndarray  # positions in the series of the test target days
    evaluation_fit_end: int  # position of the last target day the evaluation model was fitted on
    served_fit_end: int  # position of the last target day the served model was fitted on
    data: PreparedData  # the evaluation's split
    fit: FitResult  # the evaluation's fit
    served_data: PreparedData  # the served model's (its scaler); `data` without a refit
    served_fit: FitResult  # `fit` without a refit


def fit_in_process(
    data: PreparedData,
    config: TrainConfig,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> InProcessFit:
    """Evaluate on prepared data, then (config.refit) refit on all of it; both predictors are the served
    model's own numpy path (`forecast_from_closes`)."""
    from functools import partial

    from forecast_data import prepare_refit
    from forecaster_pyfunc import forecast_from_closes

    fit = fit_lightning(data, config, on_epoch)
    evaluation_predict = partial(forecast_from_closes, fit.net, data.scaler)
    evaluation_end = int(data.target_day_index("train")[-1])
    served_data, served_fit, served_predict, served_end = data, fit, evaluation_predict, evaluation_end
    if config.refit:
        served_data = prepare_refit(data.closes, config.window)
        served_fit = refit_lightning(served_data, config, fit.best_epoch)
        served_predict = partial(forecast_from_closes, served_fit.net, served_data.scaler)
        served_end = len(data.closes) - 1
    return InProcessFit(
        window=config.window,
        evaluation_predict=evaluation_predict,
        served_predict=served_predict,
        test_days=data.target_day_index("test"),
        evaluation_fit_end=evaluation_end,
        served_fit_end=served_end,
        data=data,
        fit=fit,
        served_data=served_data,
        served_fit=served_fit,
    )


def fit_closes(closes: np.ndarray, config: TrainConfig) -> InProcessFit:
    """The in-process fit entry (docs/trainer-contract.md): closes (oldest first) -> the fitted models,
    with this family's own data preparation; raises TrainingDataError when the series is too short."""
    return fit_in_process(prepare(np.asarray(closes, dtype=np.float64), config.window), config)


def in_process_setup(threads: int) -> None:
    """A process that fits in-process (the backtest): torch's threads, and Lightning's banners off."""
    import torch

    torch.set_num_threads(threads)  # the --threads default: a small LSTM is fastest on one
    quiet_lightning()


def config_from_params(pairs: list[str]) -> TrainConfig:
    """The config a job with `--param key=value` for each pair would train with (same parsing)."""
    argv = ["--data", "-", "--output", "-"]
    for pair in pairs:
        argv += ["--param", pair]
    try:
        return config_from_args(parse_args(argv))
    except SystemExit as exc:  # argparse has printed what is wrong
        raise TrainerError(f"unusable hyperparameters {pairs}: see the message above") from exc


# ------------------------------------------------------------------------------------------ metrics


def price_metrics(forecast: np.ndarray, actual: np.ndarray, previous: np.ndarray) -> dict[str, float]:
    """Test metrics in price space; the naive baseline is persistence (tomorrow's close = today's)."""
    forecast, actual, previous = (np.asarray(a, dtype=np.float64) for a in (forecast, actual, previous))
    error = forecast - actual
    mae = float(np.mean(np.abs(error)))
    naive_mae = float(np.mean(np.abs(previous - actual)))
    return {
        "mae": mae,
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mape": float(np.mean(np.abs(error) / actual) * 100.0),  # percent
        "naive_mae": naive_mae,
        "mae_vs_naive": mae / naive_mae if naive_mae > 0 else math.inf,
    }


def champion_mae(champion_uri: str, data: PreparedData) -> float:
    """MAE of the champion on the SAME test target days (see `champion_forecast`)."""
    forecast = champion_forecast(champion_uri, data)
    return float(np.mean(np.abs(forecast - data.closes[data.target_day_index("test")])))


def champion_forecast(champion_uri: str, data: PreparedData) -> np.ndarray:
    """The champion's forecasts of the test target days; its inputs come from the full series, so a
    champion with a different window is still compared day for day."""
    import mlflow.pyfunc

    try:
        champion = mlflow.pyfunc.load_model(champion_uri)
    except Exception as exc:
        raise TrainerError(f"cannot load the champion model {champion_uri!r}: {exc}") from exc
    metadata = champion.metadata.metadata or {}
    try:
        window = int(metadata["window"])
    except (KeyError, TypeError, ValueError) as exc:
        raise TrainerError(
            f"champion model {champion_uri!r} has no integer 'window' in its metadata"
        ) from exc
    days = data.target_day_index("test")
    if days[0] - window < 0:
        raise TrainerError(
            f"champion window {window} needs {window} closes before the first test day; the data has {days[0]}"
        )
    closes = data.closes
    inputs = np.stack([closes[d - window : d] for d in days])
    frame = _frame(inputs)
    predicted = champion.predict(frame)
    return np.asarray(
        predicted["forecast"] if hasattr(predicted, "columns") else predicted, dtype=np.float64
    ).reshape(-1)


def load_dates(path: Path, n_rows: int) -> list[str]:
    """The CSV's Date column as YYYY-MM-DD (row numbers as text when the file has no Date column)."""
    import pandas as pd

    frame = pd.read_csv(path)
    if "Date" not in frame.columns or len(frame) != n_rows:
        return [str(i) for i in range(n_rows)]
    return pd.to_datetime(frame["Date"]).dt.strftime("%Y-%m-%d").tolist()


def test_errors_payload(
    dates: list[str],
    actual: np.ndarray,
    model: np.ndarray,
    naive: np.ndarray,
    champion: np.ndarray | None,
) -> dict[str, Any]:
    """`test_errors.json`: the next-close values on each test target day, so the gate can test whether
    the per-day errors differ significantly (and the monitor can use them as its reference)."""

    def values(a: np.ndarray) -> list[float]:
        return [float(v) for v in np.asarray(a, dtype=np.float64).reshape(-1)]

    payload: dict[str, Any] = {
        "dates": list(dates),
        "actual": values(actual),
        "model": values(model),
        "naive": values(naive),
        "champion": values(champion) if champion is not None else None,
    }
    lengths = {k: len(v) for k, v in payload.items() if v is not None}
    if len(set(lengths.values())) != 1:
        raise TrainerError(f"test_errors.json needs one value per test day in every list, got {lengths}")
    return payload


def _frame(inputs: np.ndarray) -> Any:
    import pandas as pd

    return pd.DataFrame(
        np.asarray(inputs, dtype=np.float64), columns=[f"c{i}" for i in range(inputs.shape[1])]
    )


# ---------------------------------------------------------------------------------------- artifacts


def save_model(
    fit: FitResult,
    data: PreparedData,
    config: TrainConfig,
    dest: Path,
    fit_ends: dict[str, str] | None = None,
) -> Path:
    """Save the MLflow pyfunc model to `dest` (written to a temp dir beside it, then renamed). `data` is
    the data the model was fitted on (its scaler); `fit_ends` (`fitted_data_end`, `evaluation_fit_end`,
    YYYY-MM-DD) go into its metadata."""
    import mlflow
    import mlflow.pyfunc
    import pandas as pd
    import torch
    from forecaster_pyfunc import CONFIG_ARTIFACT, WEIGHTS_ARTIFACT, ForecasterModel
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    window = config.window
    signature = ModelSignature(
        inputs=Schema([ColSpec("double", f"c{i}") for i in range(window)]),
        outputs=Schema([ColSpec("double", "forecast")]),
    )
    example = _frame(data.input_closes[-2:])
    metadata = {
        "window": window,
        "target": "next_close",
        "input": f"closes c0..c{window - 1}, oldest first, newest last",
        "representation": "standardised daily log returns -> next-day log return; forecast = last close * exp(return)",
        "hidden_size": config.hidden_size,
        "num_layers": config.num_layers,
        "n_train": data.sizes.train,
        **(fit_ends or {}),
    }
    staging = Path(tempfile.mkdtemp(prefix=".model-", dir=dest.parent))
    try:
        weights = staging / "weights.pt"
        torch.save(fit.net.state_dict(), weights)
        model_config = staging / "config.json"
        model_config.write_text(
            json.dumps(
                {
                    "window": window,
                    "hidden_size": config.hidden_size,
                    "num_layers": config.num_layers,
                    "scaler": data.scaler.to_dict(),
                }
            )
        )
        mlflow.pyfunc.save_model(
            path=str(staging / "model"),
            python_model=ForecasterModel(),
            artifacts={WEIGHTS_ARTIFACT: str(weights), CONFIG_ARTIFACT: str(model_config)},
            code_paths=[str(TRAINER_DIR / name) for name in MODEL_CODE_FILES],
            signature=signature,
            input_example=example,
            metadata=metadata,
            pip_requirements=[
                f"mlflow=={mlflow.__version__}",
                f"torch=={torch.__version__.split('+')[0]}",
                f"numpy=={np.__version__}",
                f"pandas=={pd.__version__}",
            ],
        )
        os.replace(staging / "model", dest)
    finally:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return dest


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


def write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------- tracking


def configure_tracking(output: Path) -> str:
    """Use MLflow's environment when set (Azure ML, the local platform); otherwise a SQLite store in
    the output directory, so a bare run leaves no `mlruns/` in the working directory."""
    import mlflow

    if os.environ.get("MLFLOW_TRACKING_URI"):
        return mlflow.get_tracking_uri()
    uri = f"sqlite:///{(output / 'mlflow.db').resolve()}"
    mlflow.set_tracking_uri(uri)
    if not os.environ.get("MLFLOW_RUN_ID"):
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        if mlflow.get_experiment_by_name(name) is None:
            mlflow.create_experiment(name, artifact_location=(output / "mlartifacts").resolve().as_uri())
        mlflow.set_experiment(name)
    return uri


# ------------------------------------------------------------------------------------------------ run


def run(args: argparse.Namespace) -> dict[str, float]:
    config = config_from_args(args)
    output: Path = args.output.resolve()
    closes = load_closes(args.data)
    data = prepare(closes, config.window)  # raises TrainingDataError when the series is too short
    output.mkdir(parents=True, exist_ok=True)
    model_dir = output / "model"
    if model_dir.exists():
        raise TrainerError(
            f"{model_dir} already exists; pass an empty --output directory (model versions are immutable)"
        )

    # Artifact progress bars only add noise to job logs.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    import torch

    torch.set_num_threads(args.threads)
    tracking_uri = configure_tracking(output)
    # Nested under the batch's run when the kit's batch runner (trainer_kit/batch.py) calls this per ticker.
    with mlflow.start_run(nested=mlflow.active_run() is not None) as active:
        mlflow.log_params(
            {
                **asdict(config),
                "threads": args.threads,
                "n_train": data.sizes.train,
                "n_val": data.sizes.val,
                "n_test": data.sizes.test,
                "n_rows": len(closes),
                "champion_model": args.champion_model or "",
            }
        )
        mlflow.set_tags(
            {"data_sha256": sha256_of(args.data), "data_file": args.data.name, "target": "next_close"}
        )

        def log_epoch(epoch: int, train_loss: float, val_loss: float) -> None:
            mlflow.log_metrics({"train_loss": train_loss, "val_loss": val_loss}, step=epoch)

        trained = fit_in_process(data, config, on_epoch=log_epoch)
        fit = trained.fit
        all_dates = load_dates(args.data, len(closes))
        fit_ends = {
            "fitted_data_end": all_dates[trained.served_fit_end],
            "evaluation_fit_end": all_dates[trained.evaluation_fit_end],
        }
        mlflow.set_tags(fit_ends)
        save_model(trained.served_fit, trained.served_data, config, model_dir, fit_ends)

        # The saved artifact must answer what the fitted model answers (the scorer serves that artifact).
        import mlflow.pyfunc

        probe = data.input_closes[-5:]
        saved = mlflow.pyfunc.load_model(str(model_dir)).predict(_frame(probe))
        if not np.allclose(saved["forecast"].to_numpy(dtype=np.float64), trained.served_predict(probe)):
            raise TrainerError(f"the saved model at {model_dir} does not reproduce the fitted one")
        # Test metrics are the EVALUATION model's (fitted before the test days), through the served numpy
        # path; with refit the served model has trained on these days, so it is not what was measured.
        test = data.part("test")
        forecast = trained.evaluation_predict(data.input_closes[test])
        actual = data.target_closes[test]
        previous = data.input_closes[test][:, -1]
        metrics = price_metrics(forecast, actual, previous)
        champion_values = None
        if args.champion_model:
            champion_values = champion_forecast(args.champion_model, data)
            metrics["champion_mae"] = float(np.mean(np.abs(champion_values - actual)))
        test_days = data.target_day_index("test")
        write_json(
            output / "test_errors.json",
            test_errors_payload(
                [all_dates[d] for d in test_days], actual, forecast, previous, champion_values
            ),
        )
        mlflow.log_metrics(
            {
                **metrics,
                "epochs_trained": fit.epochs,
                "best_val_loss": fit.best_val_loss,
                "fit_seconds": fit.seconds,
                **(
                    {"refit_epochs": trained.served_fit.epochs, "refit_seconds": trained.served_fit.seconds}
                    if config.refit
                    else {}
                ),
            }
        )

        report = {
            **metrics,
            "n_train": data.sizes.train,
            "n_val": data.sizes.val,
            "n_test": data.sizes.test,
            "epochs_trained": fit.epochs,
            "best_val_loss": fit.best_val_loss,
            **({"refit_epochs": trained.served_fit.epochs} if config.refit else {}),
        }
        write_json(output / "metrics.json", report)
        plot_forecast(actual, forecast, previous, metrics, output / "forecast.png")
        # MLflow 3's log_model stores models outside the run's artifact tree; log the directory as run
        # artifacts so runs:/<id>/model and Azure's .../outputs/artifacts/paths/model/ resolve.
        mlflow.log_artifacts(str(model_dir), artifact_path="model")
        mlflow.log_artifact(str(output / "forecast.png"))
        mlflow.log_artifact(str(output / "metrics.json"))
        mlflow.log_artifact(str(output / "test_errors.json"))
        write_json(
            output / "run.json",
            {
                "run_id": active.info.run_id,
                "experiment_id": active.info.experiment_id,
                "tracking_uri": tracking_uri,
                "refit": config.refit,
                **fit_ends,
            },
        )
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
    except (TrainingDataError, TrainerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # unexpected: keep the traceback for the job log, end with one clear line
        traceback.print_exc()
        print(f"error: training failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: report[k] for k in ("mae", "naive_mae", "mae_vs_naive", "epochs_trained")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
