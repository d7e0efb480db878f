"""A repository trainer, fitted in-process: the trainer folder's own in-process fit entry, imports paid once.

Each trainer folder stays self-contained (the Azure ML job's code): its `train.py` exposes the in-process
fit entry of docs/trainer-contract.md, `config_from_params(pairs)` (its own parsing of `--param key=value`),
`fit_closes(closes, config)` (the kit's split, then the family's evaluate-then-refit that its job's run
also calls; prediction through the served model's numpy path) and `in_process_setup(threads)`. This module loads the
folder's `train.py` under a private module name (every trainer calls its script `train.py`) with the folder
on `sys.path`, as the job would run it; it names no family, so a registered trainer needs nothing here.

Each fit is the trainer's evaluate-then-refit (docs/trainer-contract.md): `evaluation_predict` is the
model measured on its test days (what the gate judges), `served_predict` the model that serves once
deployed (refitted on all the data; the same model with `refit=false`).
"""

from __future__ import annotations

import importlib.util
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from retrain.trainers import REPO_ROOT, Trainer, get_trainer, param_args


class FitError(ValueError):
    """The trainer refused the data or the hyperparameters (its own message says why)."""


@dataclass
class FittedModel:
    """One training: what the backtest needs from it, nothing that ties it to a process or MLflow."""

    window: int
    # (n, window) closes -> (n,) next closes: the evaluation model (gate, test errors) and the served one.
    evaluation_predict: Callable[[np.ndarray], np.ndarray]
    served_predict: Callable[[np.ndarray], np.ndarray]
    test_days: np.ndarray  # positions of the test target days in the closes it was trained on
    served_fit_end: int  # position there of the last target day the served model was fitted on
    cpu_s: float  # time.process_time() spent in the fit (data preparation included)
    epochs: int | None = None


_MODULES: dict[str, ModuleType] = {}
# The in-process fit entry every family's train.py exposes (docs/trainer-contract.md).
IN_PROCESS_ENTRY = ("config_from_params", "fit_closes", "in_process_setup")


def load_trainer_module(trainer: Trainer) -> ModuleType:
    """The trainer's entry script as a module (cached: imports are paid once per process)."""
    if trainer.name in _MODULES:
        return _MODULES[trainer.name]
    # Appended, not first: the trainer's own modules (forecast_*, ridge_pyfunc) have distinct names, while
    # `train` is every trainer's script name and must not shadow anyone else's `import train`. The
    # repository root gives the family the trainer kit (`trainer_kit/`), as the kit copied into a job's
    # code does (this process runs from the repository: `retrain`'s console script does not put it there).
    for folder in (str(trainer.folder_path()), str(REPO_ROOT)):
        if folder not in sys.path:
            sys.path.append(folder)
    name = f"_retrain_trainer_{trainer.name}"
    spec = importlib.util.spec_from_file_location(name, trainer.script_path())
    if spec is None or spec.loader is None:
        raise FitError(f"cannot load {trainer.script_path()}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    with warnings.catch_warnings():  # MLflow's advice about type hints on predict() is not for us
        warnings.simplefilter("ignore", UserWarning)
        spec.loader.exec_module(module)
    missing = [f for f in IN_PROCESS_ENTRY if not callable(getattr(module, f, None))]
    if missing:
        raise FitError(
            f"trainer {trainer.name!r} ({trainer.script_path()}) has no {', '.join(missing)}; the backtest "
            "fits in-process through them (see docs/trainer-contract.md)"
        )
    _MODULES[trainer.name] = module
    return module


class InProcessTrainer:
    """Fits one repository trainer on a close series, with the hyperparameters a cycle would pass."""

    def __init__(self, name: str, hyperparameters: Mapping[str, Any] | None = None, threads: int = 1):
        self.trainer = get_trainer(name)
        self.module = load_trainer_module(self.trainer)
        args = param_args(hyperparameters)
        self.pairs = [args[i + 1] for i in range(0, len(args), 2)]  # key=value, as `--param` gets them
        m = self.module
        errors = tuple(
            e for e in (getattr(m, "TrainerError", None), getattr(m, "TrainingDataError", None)) if e
        )
        self.data_errors: tuple[type[BaseException], ...] = errors or (ValueError,)
        try:
            self.config = m.config_from_params(self.pairs)  # the trainer's own parsing of --param
        except self.data_errors as exc:
            raise FitError(str(exc)) from exc
        m.in_process_setup(threads)  # the family's own (torch threads, quiet Lightning for the LSTM)
        self.warm_up()

    def warm_up(self) -> None:
        """One fit on a synthetic series, not charged to any policy: the lazy imports and first-call
        costs (Lightning, scikit-learn, MLflow's pyfunc module) are paid once per process, as a
        long-running trainer process would, instead of landing on whichever policy trains first."""
        rng = np.random.default_rng(0)
        closes = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 400)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.fit(closes)

    @property
    def window(self) -> int:
        return int(self.config.window)

    def fit(self, closes: np.ndarray) -> FittedModel:
        """Train on `closes` (oldest first); raises FitError when the trainer refuses the data."""
        m = self.module
        started = time.process_time()
        try:
            trained = m.fit_closes(np.asarray(closes, dtype=np.float64), self.config)
        except self.data_errors as exc:
            raise FitError(str(exc)) from exc
        epochs = getattr(trained, "epochs", None)  # a family that trains in epochs reports them
        cpu = time.process_time() - started
        return FittedModel(
            int(trained.window),
            trained.evaluation_predict,
            trained.served_predict,
            np.asarray(trained.test_days),
            int(trained.served_fit_end),
            cpu,
            None if epochs is None else int(epochs),
        )
