"""A model family is its fit and its pyfunc; the kit does the rest (docs/trainer-contract.md).

A family's `train.py` builds one `Family`: how a config comes from its declared hyperparameters, how it
fits the evaluation model on the training (and validation) part of the windows, how it refits the chosen
configuration on every window, its served numpy path (`predict`: (n, window) closes -> (n,) next closes),
and how its fitted state is saved for its pyfunc module. The kit gives it the contract's command line
(`parse_args`, `config_from_params`), the in-process fit entry (`fit_closes`, `in_process_setup`: the
backtest's) and the single-ticker run (`run`, `main`: the job's, and the batch runner's per ticker):

- evaluate, then refit: the evaluation model is measured on the held-out test part (metrics.json,
  test_errors.json, the gate); with `refit` (default true) the chosen configuration is refitted on ALL
  windows and THAT model is saved and serves; `refit=false` serves the evaluation model. Both fit ends
  (`evaluation_fit_end`, `fitted_data_end`: the last target dates fitted on) go to run.json, the run's
  tags and the model's metadata;
- the MLflow run (nested under an active one: the batch runner's) with the params, the metrics, the tags
  (data hash, model family, fit ends) and the artifacts `model/`, `metrics.json`, `test_errors.json`;
- the MLflow model at `<output>/model`: the family's pyfunc with its code files and fitted state, the
  signature `c0..c{window-1}` -> `forecast`, `metadata.window`, checked to reproduce the fitted model;
- the champion, whatever its family, scored on the same test days.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from trainer_kit import contract, params
from trainer_kit.data import TrainingDataError, Windows, load_series, windows
from trainer_kit.params import TrainerError

__all__ = ["Family", "InProcessFit", "ModelParts", "Record", "TrainerError", "TrainingDataError", "log_epoch"]

DEFAULT_EXPERIMENT = "forecaster"
SUMMARY_KEYS = ("mae", "naive_mae", "mae_vs_naive", "epochs_trained")  # main's one stdout line

Predictor = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ModelParts:
    """What the family's `save` hands to mlflow.pyfunc.save_model: its PythonModel (a class of its pyfunc
    module) and its fitted state as artifact files (name -> path, written under the folder it was given)."""

    python_model: Any
    artifacts: dict[str, str]


@dataclass(frozen=True)
class Record:
    """What a run records beyond the kit's own: MLflow params and metrics, metrics.json keys, model metadata."""

    params: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    report: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class InProcessFit:
    """A model fitted in memory: what `run` saves and logs, and what the policy backtest (`retrain
    backtest`) replays without a process or MLflow per training.

    Two predictors, one numpy path each ((n, window) closes -> (n,) next closes, as served):
    `evaluation_predict` is the model measured on the test days (metrics, test_errors.json, the gate);
    `served_predict` is the model that is saved and serves (the refit; the same one with refit=false)."""

    config: Any
    data: Windows
    evaluation: Any  # the family's evaluation model
    served: Any  # the family's served model: the refit, or `evaluation` with refit=false
    evaluation_predict: Predictor
    served_predict: Predictor
    test_days: np.ndarray  # positions in the series of the test target days
    evaluation_fit_end: int  # position of the last target day the evaluation model was fitted on
    served_fit_end: int  # position of the last target day the served model was fitted on

    @property
    def window(self) -> int:
        return self.data.window

    @property
    def epochs(self) -> int | None:
        """The evaluation's epochs, for a family that trains in epochs."""
        epochs = getattr(self.evaluation, "epochs", None)
        return None if epochs is None else int(epochs)


_RUN_ACTIVE = [False]


def log_epoch(epoch: int, **metrics: float) -> None:
    """A family's per-epoch losses, logged at step `epoch` inside the kit's run (a no-op elsewhere, e.g.
    in the backtest's in-process fits)."""
    if _RUN_ACTIVE[0]:
        import mlflow

        mlflow.log_metrics(metrics, step=epoch)


@contextmanager
def _epochs_logged() -> Iterator[None]:
    _RUN_ACTIVE[0] = True
    try:
        yield
    finally:
        _RUN_ACTIVE[0] = False


def _no_record(fitted: InProcessFit) -> Record:
    return Record()


def _no_requirements() -> list[str]:
    return []


@dataclass(frozen=True)
class Family:
    name: str  # the model_family tag and metadata
    folder: Path  # its folder: hyperparameters.json and the pyfunc's code files
    description: str  # the command line's description
    representation: str  # the model's metadata: what it computes from the input closes
    model_code_files: tuple[str, ...]  # the pyfunc's modules (unique names: MLflow imports them by name)
    make_config: Callable[[dict[str, Any]], Any]  # declared values -> its config (with .window and .refit)
    fit: Callable[[Windows, Any], Any]  # the evaluation model: fitted on the train part (val to choose)
    refit: Callable[[Windows, Any, Any], Any]  # (windows, config, evaluation) -> the model on every window
    predict: Callable[[Any, np.ndarray], np.ndarray]  # (model, (n, window) closes) -> (n,) next closes
    save: Callable[[Any, Path], ModelParts]  # (served model, a folder for its files) -> what MLflow saves
    record: Callable[[InProcessFit], Record] = _no_record
    requirements: Callable[[], list[str]] = _no_requirements  # the served model's, beyond mlflow/numpy/pandas
    setup: Callable[[int], None] | None = None  # CPU threads (and quiet logs) before fitting
    # Extra outputs (e.g. a plot) from (output, forecast, actual, naive, metrics): files logged as artifacts.
    extra_outputs: (
        Callable[[Path, np.ndarray, np.ndarray, np.ndarray, dict[str, float]], list[Path]] | None
    ) = None
    declared: dict[str, dict[str, Any]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "declared", params.read_declaration(self.folder))

    # ------------------------------------------------------------------------------ command line

    def parse_args(self, argv: list[str] | None = None) -> argparse.Namespace:
        return params.parse_args(self.declared, argv, self.description)

    def config_from_args(self, args: argparse.Namespace) -> Any:
        return self.make_config(params.values(self.declared, args))

    def config_from_params(self, pairs: list[str]) -> Any:
        """The config a job with `--param key=value` for each pair would train with (the same parsing)."""
        argv = ["--data", "-", "--output", "-"]
        for pair in pairs:
            argv += ["--param", pair]
        try:
            return self.config_from_args(self.parse_args(argv))
        except TrainerError as exc:
            raise TrainerError(f"unusable hyperparameters: {exc}") from None

    # --------------------------------------------------------------------------- in-process fit

    def in_process_setup(self, threads: int) -> None:
        """Before fitting in this process (the backtest): the family's threads and logging."""
        if self.setup is not None:
            self.setup(threads)

    def fit_closes(self, closes: np.ndarray, config: Any) -> InProcessFit:
        """The in-process fit entry (docs/trainer-contract.md): closes (oldest first) -> the fitted models;
        raises TrainingDataError when the series cannot be split for `config.window`."""
        return self.fit_windows(windows(closes, config.window), config)

    def fit_windows(self, data: Windows, config: Any) -> InProcessFit:
        """Evaluate, then (config.refit) refit on every window."""
        evaluation = self.fit(data, config)
        evaluation_predict = partial(self.predict, evaluation)
        evaluation_end = int(data.target_days(data.train)[-1])
        served, served_predict, served_end = evaluation, evaluation_predict, evaluation_end
        if config.refit:
            served = self.refit(data, config, evaluation)
            served_predict, served_end = partial(self.predict, served), len(data.closes) - 1
        return InProcessFit(
            config=config,
            data=data,
            evaluation=evaluation,
            served=served,
            evaluation_predict=evaluation_predict,
            served_predict=served_predict,
            test_days=data.target_days(data.test),
            evaluation_fit_end=evaluation_end,
            served_fit_end=served_end,
        )

    # ---------------------------------------------------------------------------------- outputs

    def pip_requirements(self) -> list[str]:
        """The served model's requirements.txt: what the scorer's environment must hold for this family."""
        import mlflow
        import pandas as pd

        return [
            f"mlflow=={mlflow.__version__}",
            *self.requirements(),
            f"numpy=={np.__version__}",
            f"pandas=={pd.__version__}",
        ]

    def save_model(
        self,
        fitted: InProcessFit,
        dest: Path,
        fit_ends: Mapping[str, str],
    ) -> Path:
        """The served model as an MLflow pyfunc model at `dest` (staged beside it, then renamed: never
        half-written). `fit_ends`: `fitted_data_end` and `evaluation_fit_end` (YYYY-MM-DD)."""
        import mlflow.pyfunc

        window = fitted.window
        dest = Path(dest)
        staging = Path(tempfile.mkdtemp(prefix=".model-", dir=dest.parent))
        try:
            parts = self.save(fitted.served, staging)
            mlflow.pyfunc.save_model(
                path=str(staging / "model"),
                python_model=parts.python_model,
                artifacts=parts.artifacts,
                code_paths=[str(self.folder / name) for name in self.model_code_files],
                signature=contract.signature(window),
                input_example=contract.frame(
                    contract.windows_before(fitted.data.closes, fitted.test_days[:2], window)
                ),
                metadata={
                    "window": window,
                    "target": "next_close",
                    "input": f"closes c0..c{window - 1}, oldest first, newest last",
                    "representation": self.representation,
                    "model_family": self.name,
                    **self.record(fitted).metadata,
                    **fit_ends,
                },
                pip_requirements=self.pip_requirements(),
            )
            os.replace(staging / "model", dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return dest

    # -------------------------------------------------------------------------------------- run

    def run(self, args: argparse.Namespace) -> dict[str, Any]:
        """One ticker: the data file in, `<output>/` model/, metrics.json, test_errors.json, run.json out."""
        config = self.config_from_args(args)
        series = load_series(args.data)
        data = windows(series.closes, config.window)  # refuses a short series before MLflow starts
        output: Path = args.output.resolve()
        output.mkdir(parents=True, exist_ok=True)
        model_dir = output / "model"
        if model_dir.exists():
            raise TrainerError(
                f"{model_dir} already exists; pass an empty --output directory (model versions are immutable)"
            )

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # noise in job logs
        import mlflow
        import mlflow.pyfunc

        self.in_process_setup(int(getattr(config, "threads", 1)))
        tracking_uri = configure_tracking(output)
        # Nested under the batch's run when the kit's batch runner (trainer_kit/batch.py) calls this per ticker.
        with mlflow.start_run(nested=mlflow.active_run() is not None) as active:
            mlflow.set_tags(
                {
                    "data_sha256": hashlib.sha256(args.data.read_bytes()).hexdigest(),
                    "data_file": args.data.name,
                    "target": "next_close",
                    "model_family": self.name,
                }
            )
            with _epochs_logged():
                trained = self.fit_windows(data, config)
            fit_ends = {
                "fitted_data_end": series.dates[trained.served_fit_end],
                "evaluation_fit_end": series.dates[trained.evaluation_fit_end],
            }
            mlflow.set_tags(fit_ends)
            record = self.record(trained)
            sizes = {"n_train": data.sizes.train, "n_val": data.sizes.val, "n_test": data.sizes.test}
            mlflow.log_params(
                {
                    "trainer": self.name,
                    **record.params,
                    **sizes,
                    "n_rows": len(series.closes),
                    "champion_model": args.champion_model or "",
                }
            )
            self.save_model(trained, model_dir, fit_ends)

            # The saved artifact must answer what the fitted model answers (the scorer serves that artifact).
            probe = data.inputs[-5:]
            saved = mlflow.pyfunc.load_model(str(model_dir)).predict(contract.frame(probe))
            if not np.allclose(saved["forecast"].to_numpy(dtype=np.float64), trained.served_predict(probe)):
                raise TrainerError(f"the saved model at {model_dir} does not reproduce the fitted one")
            # Test metrics are the EVALUATION model's (fitted before the test days), through the served
            # numpy path; with refit the served model has seen these days, so it is not what was measured.
            inputs = data.inputs[data.test]
            forecast = trained.evaluation_predict(inputs)
            actual, naive = data.targets[data.test], inputs[:, -1]
            metrics = contract.price_metrics(forecast, actual, naive)
            champion = None
            if args.champion_model:
                champion = contract.champion_forecast(args.champion_model, series.closes, trained.test_days)
                metrics["champion_mae"] = float(np.mean(np.abs(champion - actual)))
            write_json(
                output / "test_errors.json",
                contract.test_errors_payload(
                    [series.dates[d] for d in trained.test_days], actual, forecast, naive, champion
                ),
            )
            mlflow.log_metrics({**metrics, **record.metrics})
            report = {**metrics, **sizes, **record.report}
            write_json(output / "metrics.json", report)
            extras = (
                self.extra_outputs(output, forecast, actual, naive, metrics) if self.extra_outputs else []
            )
            # MLflow 3's log_model stores models outside the run's artifact tree; log the directory as run
            # artifacts so runs:/<id>/model and Azure's .../outputs/artifacts/paths/model/ resolve.
            mlflow.log_artifacts(str(model_dir), artifact_path="model")
            for path in (*extras, output / "metrics.json", output / "test_errors.json"):
                mlflow.log_artifact(str(path))
            write_json(
                output / "run.json",
                {
                    "run_id": active.info.run_id,
                    "experiment_id": active.info.experiment_id,
                    "tracking_uri": tracking_uri,
                    "refit": bool(config.refit),
                    **fit_ends,
                },
            )
        return report

    def main(self, argv: list[str] | None = None) -> int:
        try:
            report = self.run(self.parse_args(argv))
        except (TrainerError, TrainingDataError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:  # unexpected: the traceback for the job log, then one clear line
            traceback.print_exc()
            print(f"error: training failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(json.dumps({k: report[k] for k in SUMMARY_KEYS if k in report}))
        return 0


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def configure_tracking(output: Path) -> str:
    """Use MLflow's environment when set (Azure ML, the local platform); otherwise a SQLite store in the
    output directory, so a bare run leaves no `mlruns/` in the working directory."""
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
