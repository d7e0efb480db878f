"""Train a gradient-boosting next-day close forecaster on lagged log returns and log it to MLflow.

    python train.py --data CSV --output DIR [--champion-model PATH_OR_URI]
        [--param window=20] [--param n_estimators=200] [--param max_depth=2] [--param learning_rate=0.05]
        [--param refit=true|false]

A model family (scikit-learn's GradientBoostingRegressor) behind the trainer contract
(docs/trainer-contract.md): its fit and its pyfunc (gbr_pyfunc.py, the ensemble evaluated with numpy);
the trainer kit (trainer_kit/, copied into the job's code at submit time) does the rest. The features are
ridge's (standardised lagged returns, the mean/std of the training span only); the number of boosting
stages is chosen on the validation part only (staged predictions, up to `n_estimators`), and the refit
fits that many stages on ALL windows with the mean/std of the whole span.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer_kit.data import Windows, standardised_returns
from trainer_kit.family import Family, InProcessFit, ModelParts, Record, TrainerError, TrainingDataError

__all__ = ["TrainerError", "TrainingDataError"]

SEED = 0  # fixes the boosting's tie-breaking, so a run is reproducible


@dataclass(frozen=True)
class GbrConfig:
    window: int = 20
    n_estimators: int = 200  # stages at most; the number used is chosen on the validation part
    max_depth: int = 2
    learning_rate: float = 0.05
    refit: bool = True  # serve the chosen configuration refitted on all windows (False: the evaluation model)


@dataclass(frozen=True)
class GbrModel:
    params: dict[str, Any]  # what gbr_pyfunc.py evaluates: scaler, initial value, learning rate, trees
    scores: dict[str, float]  # the chosen stage count's validation MSE


def _params(
    data: Windows, mean: float, std: float, model: Any, config: GbrConfig, stages: int
) -> dict[str, Any]:
    """The first `stages` trees of a fitted ensemble as plain arrays (what gbr_pyfunc.py evaluates)."""
    trees = []
    for estimator in model.estimators_[:stages, 0]:
        t = estimator.tree_
        trees.append(
            {
                "depth": int(t.max_depth),
                "feature": [int(v) for v in t.feature],
                "threshold": [float(v) for v in t.threshold],
                "left": [int(v) for v in t.children_left],
                "right": [int(v) for v in t.children_right],
                "value": [float(v) for v in t.value.reshape(-1)],
            }
        )
    return {
        "window": data.window,
        "mean": mean,
        "std": std,
        "init": float(np.asarray(model.init_.constant_).reshape(-1)[0]),
        "learning_rate": float(config.learning_rate),
        "max_depth": int(config.max_depth),
        "stages": int(stages),
        "trees": trees,
    }


def _boosted(x: np.ndarray, y: np.ndarray, config: GbrConfig, stages: int) -> Any:
    from sklearn.ensemble import GradientBoostingRegressor

    return GradientBoostingRegressor(
        n_estimators=stages,
        max_depth=config.max_depth,
        learning_rate=config.learning_rate,
        random_state=SEED,
    ).fit(x, y)


def fit(data: Windows, config: GbrConfig) -> GbrModel:
    """Fit on the training part; the number of stages is the one whose staged prediction has the best
    validation MSE."""
    from gbr_pyfunc import forecast_from_closes

    mean, std, x, y = standardised_returns(data, data.train.stop)
    model = _boosted(x[data.train], y[data.train], config, config.n_estimators)
    staged = list(model.staged_predict(x[data.val]))
    val_mse = [float(np.mean((p - y[data.val]) ** 2)) for p in staged]
    stages = int(np.argmin(val_mse)) + 1
    params = _params(data, mean, std, model, config, stages)
    # The served numpy path must be the ensemble scikit-learn fitted (the first `stages` trees, read back).
    expected = data.inputs[data.val][:, -1] * np.exp(staged[stages - 1] * std + mean)
    if not np.allclose(forecast_from_closes(params, data.inputs[data.val]), expected, rtol=1e-9):
        raise TrainerError("the numpy ensemble does not reproduce scikit-learn's predictions")
    return GbrModel(params, {"val_mse": val_mse[stages - 1], "stages": float(stages)})


def refit(data: Windows, config: GbrConfig, evaluation: GbrModel) -> GbrModel:
    """The chosen number of stages on ALL windows, mean/std from the whole span."""
    mean, std, x, y = standardised_returns(data, len(data.targets))
    stages = int(evaluation.params["stages"])
    return GbrModel(_params(data, mean, std, _boosted(x, y, config, stages), config, stages), {})


def predict(model: GbrModel, closes: np.ndarray) -> np.ndarray:
    from gbr_pyfunc import forecast_from_closes

    return forecast_from_closes(model.params, closes)


def save(model: GbrModel, folder: Path) -> ModelParts:
    from gbr_pyfunc import PARAMS_ARTIFACT, GbrForecasterModel

    params_file = folder / "params.json"
    params_file.write_text(json.dumps(model.params), encoding="utf-8")
    return ModelParts(GbrForecasterModel(), {PARAMS_ARTIFACT: str(params_file)})


def record(fitted: InProcessFit) -> Record:
    config, stages = fitted.config, fitted.served.params["stages"]
    return Record(
        params={
            "window": config.window,
            "n_estimators": config.n_estimators,
            "max_depth": config.max_depth,
            "learning_rate": config.learning_rate,
            "stages": stages,
            "refit": str(config.refit).lower(),
        },
        metrics=fitted.evaluation.scores,
        report={"stages": stages},
        metadata={"stages": stages},
    )


FAMILY = Family(
    name="gbr",
    folder=Path(__file__).resolve().parent,
    description="Train the gradient-boosting next-day close forecaster and log it to MLflow.",
    representation="standardised lagged daily log returns -> gradient-boosted trees -> next log return; "
    "forecast = last close * exp(return)",
    model_code_files=("gbr_pyfunc.py",),
    make_config=lambda values: GbrConfig(**values),
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
