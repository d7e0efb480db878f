"""Real ridge model versions in the local platform's MLflow registry, without a training job: the model
`tests.bundle_models.ridge_model` fits in-process is logged to an MLflow run of the local store and
registered from it exactly as `LocalPlatform.register_model` registers a job's model (source
`runs:/<run>/model`, the family and fit-end tags the workflow and the trainer set)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from retrain.local.platform import LocalPlatform, import_mlflow
from retrain.ports import ModelRef
from retrain.vocabulary import TAG_FITTED_DATA_END, TAG_MODEL_FAMILY, TAG_TRAINER
from tests.bundle_models import ridge_model


def register_ridge(platform: LocalPlatform, ticker: str, window: int, work: Path) -> ModelRef:
    """The next version of `forecast-<ticker>` in the platform's registry: a ridge model of `window`."""
    import_mlflow()
    from mlflow.exceptions import MlflowException

    client = platform.client
    name = f"forecast-{ticker.lower().replace('.', '-')}"
    model_dir = ridge_model(work / f"{name}-w{window}", ticker, window)
    experiment_id = platform._experiment_id(f"retrain-{name}")
    run = client.create_run(experiment_id, run_name=f"{name}-w{window}")
    client.log_artifacts(run.info.run_id, str(model_dir), "model")
    client.set_terminated(run.info.run_id)
    with contextlib.suppress(MlflowException):  # registered by an earlier call
        client.create_registered_model(name)
    tags = {TAG_MODEL_FAMILY: "ridge", TAG_TRAINER: "ridge", TAG_FITTED_DATA_END: "2026-12-04"}
    version = client.create_model_version(
        name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id, tags=tags
    )
    return ModelRef(name, str(version.version))
