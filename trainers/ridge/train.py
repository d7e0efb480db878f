"""Train a ridge regression next-day close forecaster on lagged log returns and log it to MLflow.

    python train.py --data CSV --output DIR [--champion-model PATH_OR_URI]
        [--param window=20] [--param alpha=auto|FLOAT] [--param refit=true|false]

A model family behind the trainer contract (docs/trainer-contract.md): its fit and its pyfunc
(ridge_pyfunc.py); the trainer kit (trainer_kit/, copied into the job's code at submit time) does the
rest: the command line, the chronological 70/15/15 split, evaluate-then-refit, the MLflow run, the model,
metrics.json, test_errors.json and run.json. The return mean/std are fitted on the training span only;
`alpha` (with `auto`) is chosen on the validation part only; the refit fits the chosen alpha on ALL
windows with the mean/std of the whole span.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer_kit.data import Windows, standardised_returns
from trainer_kit.family import Family, InProcessFit, ModelParts, Record, TrainerError, TrainingDataError

__all__ = ["TrainerError", "TrainingDataError"]

ALPHA_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


@dataclass(frozen=True)
class RidgeConfig:
    window: int = 20
    alpha: float | None = None  # None: chosen on the validation part from ALPHA_GRID
    refit: bool = True  # serve the chosen alpha refitted on all windows (False: the evaluation model)


def make_config(values: dict[str, Any]) -> RidgeConfig:
    alpha = values["alpha"]
    return RidgeConfig(
        window=values["window"], alpha=None if alpha == "auto" else alpha, refit=values["refit"]
    )


@dataclass(frozen=True)
class RidgeModel:
    params: dict[str, Any]  # what ridge_pyfunc.py evaluates: window, mean, std, coef, intercept, alpha
    scores: dict[str, float]  # validation MSE per alpha tried (with alpha=auto)


def _params(data: Windows, mean: float, std: float, model: Any, alpha: float) -> dict[str, Any]:
    return {
        "window": data.window,
        "mean": mean,
        "std": std,
        "coef": [float(c) for c in model.coef_],
        "intercept": float(model.intercept_),
        "alpha": float(alpha),
    }


def fit(data: Windows, config: RidgeConfig) -> RidgeModel:
    """Fit on the training part (the scaler from the training span only); alpha `auto` picks the best
    validation MSE."""
    from sklearn.linear_model import Ridge

    mean, std, x, y = standardised_returns(data, data.train.stop)

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
    return RidgeModel(_params(data, mean, std, fitted(alpha), alpha), scores)


def refit(data: Windows, config: RidgeConfig, evaluation: RidgeModel) -> RidgeModel:
    """The chosen alpha on ALL windows, mean/std from the whole span."""
    from sklearn.linear_model import Ridge

    alpha = evaluation.params["alpha"]
    mean, std, x, y = standardised_returns(data, len(data.targets))
    return RidgeModel(_params(data, mean, std, Ridge(alpha=alpha).fit(x, y), alpha), {})


def predict(model: RidgeModel, closes: np.ndarray) -> np.ndarray:
    from ridge_pyfunc import forecast_from_closes

    return forecast_from_closes(model.params, closes)


def save(model: RidgeModel, folder: Path) -> ModelParts:
    import json

    from ridge_pyfunc import PARAMS_ARTIFACT, RidgeForecasterModel

    params_file = folder / "params.json"
    params_file.write_text(json.dumps(model.params), encoding="utf-8")
    return ModelParts(RidgeForecasterModel(), {PARAMS_ARTIFACT: str(params_file)})


def record(fitted: InProcessFit) -> Record:
    config, alpha = fitted.config, fitted.served.params["alpha"]
    return Record(
        params={
            "window": config.window,
            "alpha": alpha,
            "alpha_param": "auto" if config.alpha is None else config.alpha,
            "refit": str(config.refit).lower(),
        },
        metrics=fitted.evaluation.scores,
        report={"alpha": alpha},
        metadata={"alpha": alpha},
    )


FAMILY = Family(
    name="ridge",
    folder=Path(__file__).resolve().parent,
    description="Train the ridge next-day close forecaster and log it to MLflow.",
    representation="standardised lagged daily log returns -> ridge -> next log return; "
    "forecast = last close * exp(return)",
    model_code_files=("ridge_pyfunc.py",),
    make_config=make_config,
    fit=fit,
    refit=refit,
    predict=predict,
    save=save,
    record=record,
)
# The contract's entries (docs/trainer-contract.md): the job's and the batch runner's, and the backtest's.
parse_args, config_from_params, run, main = (
    FAMILY.parse_args,
    FAMILY.config_from_params,
    FAMILY.run,
    FAMILY.main,
)
fit_closes, in_process_setup = FAMILY.fit_closes, FAMILY.in_process_setup

if __name__ == "__main__":
    sys.exit(main())
