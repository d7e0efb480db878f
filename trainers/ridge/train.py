"""Train a ridge regression next-day close forecaster on lagged log returns and log it to MLflow.

    python trainers/ridge/train.py --data CSV --output DIR [--champion-model PATH_OR_URI]
        [--param window=20] [--param alpha=auto|FLOAT] [--param refit=true|false]

A second model family beside the LSTM of trainer/, behind the same contract (docs/trainer-contract.md).
Self-contained: imports nothing from `retrain` or `trainer/`. The split and leakage discipline are those
of trainer/forecast_data.py: sample k takes the closes of days k..k+window-1 and targets day k+window; the
samples split in time order 70/15/15; the return mean/std are fitted on the training span only; `alpha`
(with `auto`) is chosen on the validation part only; the test part is touched once, for the metrics.

Evaluate, then refit (docs/trainer-contract.md): metrics.json and test_errors.json are those of the
evaluation model (fitted on the training part) on the held-out test part; then, with `refit=true` (the
default), the chosen alpha is refitted on ALL windows, with the return mean/std of the whole span, and
THAT model is saved and logged. `refit=false` serves the evaluation model (the behaviour before refits).
The run records both fit ends (`evaluation_fit_end`, `fitted_data_end`: last target dates fitted on).

Writes DIR/model/ (MLflow pyfunc, served with numpy only), DIR/metrics.json, DIR/test_errors.json and
DIR/run.json. Tracking follows MLflow's environment as trainer/train.py does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TRAINER_DIR = Path(__file__).resolve().parent
MODEL_CODE_FILES = ("ridge_pyfunc.py",)
DEFAULT_EXPERIMENT = "forecaster"
TRAIN_FRACTION, VAL_FRACTION = 0.70, 0.15
MIN_WINDOWS = {"train": 20, "val": 5, "test": 5}
ALPHA_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
# Every hyperparameter this trainer takes through `--param key=value`, with its type, bounds and default:
# declared in hyperparameters.json beside this script (the trainer contract), which the edge enforces too.
HYPERPARAMETERS: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).resolve().parent / "hyperparameters.json").read_text(encoding="utf-8")
)
PARAM_DEFAULTS = {
    k: (str(v["default"]).lower() if isinstance(v["default"], bool) else str(v["default"]))
    for k, v in HYPERPARAMETERS.items()
}
BOOLEAN_TEXT = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class TrainerError(RuntimeError):
    """A failure with a clear cause (bad arguments or data, unusable champion, occupied output)."""


# --------------------------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train the ridge next-day close forecaster and log it to MLflow.")
    p.add_argument("--data", required=True, type=Path, help="CSV with Date (ascending) and Close columns")
    p.add_argument("--output", required=True, type=Path, help="directory for model/, metrics.json, ...")
    p.add_argument("--champion-model", default=None, help="MLflow model dir or URI of the current champion")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"hyperparameter (repeatable): {', '.join(f'{k} (default {v})' for k, v in PARAM_DEFAULTS.items())}",
    )
    return p.parse_args(argv)


@dataclass(frozen=True)
class RidgeConfig:
    window: int = 20
    alpha: float | None = None  # None: chosen on the validation part from ALPHA_GRID
    refit: bool = True  # serve the chosen alpha refitted on all windows (False: the evaluation model)


def config_from_params(pairs: list[str]) -> RidgeConfig:
    values = dict(PARAM_DEFAULTS)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise TrainerError(f"--param {pair!r}: use --param key=value")
        if key not in PARAM_DEFAULTS:
            raise TrainerError(
                f"unknown hyperparameter {key!r}; this trainer takes {', '.join(sorted(PARAM_DEFAULTS))}"
            )
        values[key] = value
    window = bounded("window", values["window"])
    refit = bounded("refit", values["refit"])
    alpha = bounded("alpha", values["alpha"])
    return RidgeConfig(window=window, alpha=None if alpha == "auto" else alpha, refit=refit)


def bounded(key: str, text: str) -> Any:
    """The value of hyperparameter `key` from its text, within its declared type and bounds
    (hyperparameters.json); raises TrainerError saying what to send."""
    spec = HYPERPARAMETERS[key]
    if text.strip() in spec.get("also", ()):
        return text.strip()
    kind, low, high = spec["type"], spec.get("min"), spec.get("max")
    expected = (
        "true or false"
        if kind == "bool"
        else f"{'an integer' if kind == 'int' else 'a number'} from {low} to {high}"
        + (f" or {' or '.join(spec['also'])}" if spec.get("also") else "")
    )
    try:
        if kind == "bool":
            value: Any = BOOLEAN_TEXT[text.strip().lower()]
        else:
            value = int(text) if kind == "int" else float(text)
            if not math.isfinite(value) or not low <= value <= high:
                raise ValueError
    except (KeyError, ValueError):
        raise TrainerError(f"{key}={text!r}: expected {expected}") from None
    return value


# -------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Series:
    dates: list[str]  # YYYY-MM-DD, ascending
    closes: np.ndarray


def load_series(path: Path) -> Series:
    import pandas as pd

    if not path.is_file():
        raise TrainerError(f"data file not found: {path} (pass --data with a CSV that has Date and Close)")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TrainerError(
            f"cannot read {path} as CSV ({exc}); send a CSV with Date and Close columns"
        ) from exc
    missing = [c for c in ("Date", "Close") if c not in frame.columns]
    if missing:
        raise TrainerError(f"{path} has no {' or '.join(missing)} column; send a CSV with Date and Close")
    close = pd.to_numeric(frame["Close"], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(close).all() or (close <= 0).any():
        raise TrainerError(f"every Close in {path} must be a finite number > 0")
    dates = pd.to_datetime(frame["Date"], errors="coerce")
    if dates.isna().any() or not dates.is_monotonic_increasing or dates.duplicated().any():
        raise TrainerError(f"Date in {path} must be valid, unique and ascending (oldest first)")
    return Series([d.strftime("%Y-%m-%d") for d in dates], close)


@dataclass(frozen=True)
class Split:
    window: int
    train: slice
    val: slice
    test: slice
    inputs: np.ndarray  # (n, window) closes of sample k: days k..k+window-1
    targets: np.ndarray  # (n,) close of day k+window

    def target_days(self, part: slice) -> np.ndarray:
        return np.arange(part.start, part.stop) + self.window


def split(closes: np.ndarray, window: int) -> Split:
    n = len(closes) - window
    n_train, n_val = int(n * TRAIN_FRACTION), int(n * VAL_FRACTION)
    sizes = {"train": n_train, "val": n_val, "test": n - n_train - n_val}
    short = [f"{k} {sizes[k]} < {m}" for k, m in MIN_WINDOWS.items() if sizes[k] < m]
    if short:
        raise TrainerError(
            f"too few rows: {len(closes)} closes with window {window} give {', '.join(short)} windows; "
            "send a longer history or a smaller window"
        )
    inputs = np.lib.stride_tricks.sliding_window_view(closes, window)[:n].copy()
    return Split(
        window,
        slice(0, n_train),
        slice(n_train, n_train + n_val),
        slice(n_train + n_val, n),
        inputs,
        closes[window:].copy(),
    )


# ---------------------------------------------------------------------------------------- training


def _standardised(data: Split, span_end: int) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Return mean/std fitted on the closes of samples [0, span_end) (inputs and targets), and every
    sample's standardised inputs and target under them."""
    from ridge_pyfunc import lagged_returns

    rows = slice(0, span_end)
    returns = np.diff(np.log(np.concatenate([data.inputs[rows][0], data.targets[rows]])))
    mean, std = float(returns.mean()), float(returns.std()) or 1.0
    x = (lagged_returns(data.inputs) - mean) / std
    y = (np.log(data.targets / data.inputs[:, -1]) - mean) / std
    return mean, std, x, y


def _params(data: Split, mean: float, std: float, model: Any, alpha: float) -> dict[str, Any]:
    return {
        "window": data.window,
        "mean": mean,
        "std": std,
        "coef": [float(c) for c in model.coef_],
        "intercept": float(model.intercept_),
        "alpha": float(alpha),
    }


def fit(data: Split, config: RidgeConfig) -> tuple[dict[str, Any], dict[str, float]]:
    """Fit on the training part; alpha `auto` picks the best validation MSE. -> (params, alpha scores)."""
    from sklearn.linear_model import Ridge

    # Scaler from the training span only (the closes training samples touch: inputs and targets).
    mean, std, x, y = _standardised(data, data.train.stop)

    def fitted(alpha: float) -> Any:
        return Ridge(alpha=alpha).fit(x[data.train], y[data.train])

    scores: dict[str, float] = {}
    if config.alpha is None:
        for alpha in ALPHA_GRID:
            model = fitted(alpha)
            scores[f"val_mse_alpha_{alpha:g}"] = float(
                np.mean((model.predict(x[data.val]) - y[data.val]) ** 2)
            )
        alpha = min(ALPHA_GRID, key=lambda a: scores[f"val_mse_alpha_{a:g}"])
    else:
        alpha = config.alpha
    return _params(data, mean, std, fitted(alpha), alpha), scores


def refit(data: Split, alpha: float) -> dict[str, Any]:
    """The chosen alpha fitted on ALL windows (train + validation + test), mean/std from the whole span:
    the model that serves, once the evaluation has been measured on the held-out test part."""
    from sklearn.linear_model import Ridge

    n = len(data.targets)
    mean, std, x, y = _standardised(data, n)
    return _params(data, mean, std, Ridge(alpha=alpha).fit(x, y), alpha)


@dataclass
class InProcessFit:
    """A model fitted in memory: what `run` saves and logs, and what the policy backtest
    (`retrain backtest`) replays without a process or MLflow per training.

    Two predictors, one numpy path each ((n, window) closes -> (n,) next closes, as served):
    `evaluation_predict` is the model measured on the test days (metrics, test_errors.json, the gate);
    `served_predict` is the model that is saved and serves (the refit; the same one with refit=false)."""

    window: int
    evaluation_predict: Any
    served_predict: Any
    test_days: np.ndarray  # positions in the series of the test target days
    evaluation_fit_end: int  # position of the last target day the evaluation model was fitted on
    served_fit_end: int  # position of the last target day the served model was fitted on
    params: dict[str, Any]  # the served model's
    evaluation_params: dict[str, Any]
    alpha_scores: dict[str, float]


def fit_in_process(data: Split, config: RidgeConfig) -> InProcessFit:
    from functools import partial

    from ridge_pyfunc import forecast_from_closes

    evaluation, scores = fit(data, config)
    evaluation_end = int(data.target_days(data.train)[-1])
    if config.refit:
        served, served_end = refit(data, evaluation["alpha"]), len(data.targets) - 1 + data.window
    else:
        served, served_end = evaluation, evaluation_end
    evaluation_predict = partial(forecast_from_closes, evaluation)
    return InProcessFit(
        window=data.window,
        evaluation_predict=evaluation_predict,
        served_predict=partial(forecast_from_closes, served) if config.refit else evaluation_predict,
        test_days=data.target_days(data.test),
        evaluation_fit_end=evaluation_end,
        served_fit_end=served_end,
        params=served,
        evaluation_params=evaluation,
        alpha_scores=scores,
    )


def fit_closes(closes: np.ndarray, config: RidgeConfig) -> InProcessFit:
    """The in-process fit entry (docs/trainer-contract.md): closes (oldest first) -> the fitted models,
    with this family's own data preparation; raises TrainerError when the data cannot be fitted."""
    return fit_in_process(split(np.asarray(closes, dtype=np.float64), config.window), config)


def in_process_setup(threads: int) -> None:
    """Nothing to set up: scikit-learn's fits here are single-threaded."""


# ------------------------------------------------------------------------------------------ outputs


def _frame(inputs: np.ndarray) -> Any:
    import pandas as pd

    return pd.DataFrame(
        np.asarray(inputs, dtype=np.float64), columns=[f"c{i}" for i in range(inputs.shape[1])]
    )


def save_model(params: dict[str, Any], data: Split, dest: Path, fit_ends: dict[str, str]) -> Path:
    """The MLflow pyfunc model at `dest` (staged beside it, then renamed: never half-written).
    `fit_ends`: `fitted_data_end` and `evaluation_fit_end` (YYYY-MM-DD), carried in its metadata."""
    import mlflow
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from ridge_pyfunc import PARAMS_ARTIFACT, RidgeForecasterModel

    window = data.window
    signature = ModelSignature(
        inputs=Schema([ColSpec("double", f"c{i}") for i in range(window)]),
        outputs=Schema([ColSpec("double", "forecast")]),
    )
    metadata = {
        "window": window,
        "target": "next_close",
        "input": f"closes c0..c{window - 1}, oldest first, newest last",
        "representation": "standardised lagged daily log returns -> ridge -> next log return; forecast = last close * exp(return)",
        "model_family": "ridge",
        "alpha": params["alpha"],
        **fit_ends,
    }
    staging = Path(tempfile.mkdtemp(prefix=".model-", dir=dest.parent))
    try:
        params_file = staging / "params.json"
        params_file.write_text(json.dumps(params), encoding="utf-8")
        mlflow.pyfunc.save_model(
            path=str(staging / "model"),
            python_model=RidgeForecasterModel(),
            artifacts={PARAMS_ARTIFACT: str(params_file)},
            code_paths=[str(TRAINER_DIR / name) for name in MODEL_CODE_FILES],
            signature=signature,
            input_example=_frame(data.inputs[data.test][:2]),
            metadata=metadata,
            pip_requirements=[
                f"mlflow=={mlflow.__version__}",
                f"numpy=={np.__version__}",
                f"pandas=={pd.__version__}",
            ],
        )
        os.replace(staging / "model", dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def champion_forecast(champion_uri: str, closes: np.ndarray, days: np.ndarray) -> np.ndarray:
    """The champion's next-close forecasts for the SAME test target days, whatever its family or window
    (its inputs come from the full series)."""
    import mlflow.pyfunc

    try:
        champion = mlflow.pyfunc.load_model(champion_uri)
    except Exception as exc:
        raise TrainerError(f"cannot load the champion model {champion_uri!r}: {exc}") from exc
    try:
        window = int((champion.metadata.metadata or {})["window"])
    except (KeyError, TypeError, ValueError) as exc:
        raise TrainerError(
            f"champion model {champion_uri!r} has no integer 'window' in its metadata"
        ) from exc
    if days[0] - window < 0:
        raise TrainerError(f"champion window {window} needs {window} closes before the first test day")
    predicted = champion.predict(_frame(np.stack([closes[d - window : d] for d in days])))
    values = predicted["forecast"] if hasattr(predicted, "columns") else predicted
    return np.asarray(values, dtype=np.float64).reshape(-1)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def configure_tracking(output: Path) -> str:
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    config = config_from_params(args.param)
    series = load_series(args.data)
    data = split(series.closes, config.window)
    output: Path = args.output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    model_dir = output / "model"
    if model_dir.exists():
        raise TrainerError(f"{model_dir} already exists; pass an empty --output directory")

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    import mlflow.pyfunc

    tracking_uri = configure_tracking(output)
    # Nested under the batch's run when the kit's batch runner (trainer_kit/batch.py) calls this per ticker.
    with mlflow.start_run(nested=mlflow.active_run() is not None) as active:
        trained = fit_in_process(data, config)
        params, alpha_scores = trained.params, trained.alpha_scores
        fit_ends = {
            "fitted_data_end": series.dates[trained.served_fit_end],
            "evaluation_fit_end": series.dates[trained.evaluation_fit_end],
        }
        mlflow.log_params(
            {
                "trainer": "ridge",
                "window": config.window,
                "alpha": params["alpha"],
                "alpha_param": "auto" if config.alpha is None else config.alpha,
                "refit": str(config.refit).lower(),
                "n_train": data.train.stop - data.train.start,
                "n_val": data.val.stop - data.val.start,
                "n_test": data.test.stop - data.test.start,
                "n_rows": len(series.closes),
                "champion_model": args.champion_model or "",
            }
        )
        mlflow.set_tags(
            {
                "data_sha256": hashlib.sha256(args.data.read_bytes()).hexdigest(),
                "data_file": args.data.name,
                "target": "next_close",
                "model_family": "ridge",
                **fit_ends,
            }
        )
        save_model(params, data, model_dir, fit_ends)

        # The saved artifact must answer what the fitted model answers (the scorer serves that artifact).
        served = mlflow.pyfunc.load_model(str(model_dir))
        probe = data.inputs[-5:]
        saved = served.predict(_frame(probe))["forecast"].to_numpy(dtype=np.float64)
        if not np.allclose(saved, trained.served_predict(probe), rtol=1e-9):
            raise TrainerError(f"the saved model at {model_dir} does not reproduce the fitted one")
        # Test metrics are the EVALUATION model's (fitted before the test days), through the served
        # numpy path; with refit the served model has seen these days, so it is not what was measured.
        forecast = trained.evaluation_predict(data.inputs[data.test])
        actual = data.targets[data.test]
        naive = data.inputs[data.test][:, -1]
        error = forecast - actual
        mae = float(np.mean(np.abs(error)))
        naive_mae = float(np.mean(np.abs(naive - actual)))
        metrics: dict[str, float] = {
            "mae": mae,
            "rmse": float(np.sqrt(np.mean(error**2))),
            "mape": float(np.mean(np.abs(error) / actual) * 100.0),
            "naive_mae": naive_mae,
            "mae_vs_naive": mae / naive_mae if naive_mae > 0 else math.inf,
        }
        days = data.target_days(data.test)
        champion = None
        if args.champion_model:
            champion = champion_forecast(args.champion_model, series.closes, days)
            metrics["champion_mae"] = float(np.mean(np.abs(champion - actual)))
        mlflow.log_metrics({**metrics, **alpha_scores})

        write_json(output / "metrics.json", {**metrics, "n_test": len(actual), "alpha": params["alpha"]})
        write_json(
            output / "test_errors.json",
            {
                "dates": [series.dates[d] for d in days],
                "actual": [float(v) for v in actual],
                "model": [float(v) for v in forecast],
                "naive": [float(v) for v in naive],
                "champion": None if champion is None else [float(v) for v in champion],
            },
        )
        # As trainer/train.py: the model directory as run artifacts, so runs:/<id>/model resolves.
        mlflow.log_artifacts(str(model_dir), artifact_path="model")
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
    return metrics


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        metrics = run(args)
    except TrainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # unexpected: the traceback for the job log, then one clear line
        traceback.print_exc()
        print(f"error: training failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: metrics[k] for k in ("mae", "naive_mae", "mae_vs_naive")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
