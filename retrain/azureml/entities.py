"""Pure builders of the azure-ai-ml entities the adapter submits. No I/O, no client: every function
takes plain values and returns an SDK entity, so the tests can validate each one against the SDK's own
YAML schemas (dump, then `load_job` / `load_model` / ...)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from azure.ai.ml import Input, Output, command
from azure.ai.ml.constants import AssetTypes
from azure.ai.ml.entities import (
    AmlCompute,
    CodeConfiguration,
    Command,
    Data,
    DataCollector,
    DeploymentCollection,
    Environment,
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    Model,
    OnlineRequestSettings,
)

from retrain.job_code import BATCH_RUNNER, KIT_NAME
from retrain.ports import (
    SLOTS,
    BatchTrainingRequest,
    DataAsset,
    ModelRef,
    PlatformError,
    TrainingRequest,
    is_bundle,
)
from retrain.scoring_server import SLOT_CONCURRENT_REQUESTS, SLOT_SERVER_ENVIRONMENT
from retrain.trainers import DEFAULT_TRAINER, TrainerError, get_trainer, param_pairs
from retrain.vocabulary import (
    TAG_BATCH_TICKERS,
    TAG_BUNDLE,
    TAG_CHAMPION,
    TAG_CODE_VERSION,
    TAG_DATA_ASSET,
    TAG_DATA_VERSION,
    TAG_INSTANCE_ID,
    TAG_JOB_NAME,
    TAG_TICKER,
    TAG_TRAINER,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
# Curated Azure ML base image; the conda file layers the trainer's / scorer's pinned packages on top.
BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"

# Tag names shared with the local adapter, the Event Grid handler and the lineage queries.

# Azure ML names: letters, digits, '-' and '_', starting with a letter or digit.
_ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}\Z")
# Online endpoint names: 3-32 chars, letter first, letters/digits/'-', no trailing '-'.
_ENDPOINT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]\Z")


def _check_name(kind: str, value: str, pattern: re.Pattern[str] = _ASSET_NAME) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise PlatformError(
            f"{kind} {value!r} is not a valid Azure ML name; use letters, digits, '-' or '_' "
            f"(pattern {pattern.pattern})"
        )
    return value


def _str_tags(tags: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in tags.items() if v is not None}


def asset_ref(name: str, version: str) -> str:
    """The short reference form the SDK resolves to the asset's ARM id."""
    return f"azureml:{name}:{version}"


def data_entity(name: str, version: str, csv_path: str, tags: dict[str, str]) -> Data:
    _check_name("data asset name", name)
    if not str(version):
        raise PlatformError("data asset version is empty; pass the snapshot's content version")
    return Data(
        name=name,
        version=str(version),
        type=AssetTypes.URI_FILE,
        path=str(csv_path),
        description=f"Daily OHLCV snapshot {name}:{version}",
        tags=_str_tags(tags),
    )


def trainer_environment(repo_root: Path = REPO_ROOT, trainer: str = DEFAULT_TRAINER) -> Environment:
    """The trainer folder's own conda file (each trainer declares what it needs)."""
    folder = get_trainer(trainer).folder_path(repo_root)
    return Environment(image=BASE_IMAGE, conda_file=str(folder / "environment.yml"))


def scorer_environment(repo_root: Path = REPO_ROOT) -> Environment:
    return Environment(image=BASE_IMAGE, conda_file=str(repo_root / "scorer" / "environment.yml"))


def job_tags(request: TrainingRequest) -> dict[str, str]:
    data = request.data_asset
    tags = {
        TAG_INSTANCE_ID: request.instance_id,
        TAG_TICKER: request.ticker,
        TAG_DATA_ASSET: data.name,
        TAG_DATA_VERSION: data.version,
        TAG_CODE_VERSION: request.code_version,
        TAG_TRAINER: request.trainer,
    }
    champion = request.champion_model
    if champion:
        tags[TAG_CHAMPION] = f"{champion.name}:{champion.version}"
    return tags


def training_job(request: TrainingRequest, compute: str, code: Path, repo_root: Path = REPO_ROOT) -> Command:
    """The command job that runs the request's trainer on the cluster. `code` is the job's code folder:
    the trainer folder with the kit copied in (`retrain.job_code.assemble_job_code`, as the local platform
    runs it). The data asset and the champion model are inputs by reference (`azureml:<name>:<version>`),
    so the job records their lineage; each hyperparameter is an input `param_<key>` passed as
    `--param key=...`."""
    _check_name("job name", request.job_name)
    _check_name("experiment name", request.experiment_name)
    try:
        trainer = get_trainer(request.trainer)
        params = param_pairs(request.hyperparameters)
    except TrainerError as exc:
        raise PlatformError(str(exc)) from exc
    data = request.data_asset
    inputs: dict[str, Any] = {
        "data": Input(type=AssetTypes.URI_FILE, path=asset_ref(data.name, data.version))
    }
    args = [f"python {trainer.entry_script}", "--data ${{inputs.data}}", "--output ${{outputs.output}}"]
    champion = request.champion_model
    if champion:
        inputs["champion"] = Input(
            type=AssetTypes.MLFLOW_MODEL, path=asset_ref(champion.name, champion.version)
        )
        args.append("--champion-model ${{inputs.champion}}")
    for key, value in params:
        inputs[f"param_{key}"] = value
        args.append(f"--param {key}=${{{{inputs.param_{key}}}}}")
    return command(
        name=request.job_name,
        display_name=f"train {request.ticker} {data.version}",
        experiment_name=request.experiment_name,
        description=f"Retrain the {request.ticker} forecaster on {data.name}:{data.version}",
        code=str(code),
        command=" ".join(args),
        inputs=inputs,
        outputs={"output": Output(type=AssetTypes.URI_FOLDER)},
        environment=trainer_environment(repo_root, trainer.name),
        compute=compute,
        tags=job_tags(request),
    )


# A batch job's outputs (docs/trainer-contract.md "Batches") go to a fixed place: where Azure ML would put
# the `output` output by default (azureml/<job>/output on the default datastore), named explicitly so the
# adapter reads and registers from it without asking the service where it went.
BATCH_OUTPUT = "output"
BATCH_DATASTORE = "workspaceblobstore"
BATCH_INPUTS_DIR = "batch_inputs"  # staged in the job's working directory by trainer_kit/stage_inputs.py
# A ticker travels in the batch job's command line (staged as <ticker>.csv): a canonical symbol only.
_BATCH_TICKER = re.compile(r"^[A-Z0-9^][A-Z0-9.^=-]{0,14}\Z")


def batch_output_path(job_name: str) -> str:
    return f"azureml://datastores/{BATCH_DATASTORE}/paths/azureml/{job_name}/{BATCH_OUTPUT}/"


def batch_training_job(
    request: BatchTrainingRequest, compute: str, code: Path, repo_root: Path = REPO_ROOT
) -> Command:
    """ONE command job that trains a batch of tickers (a fleet cycle's batch) with the kit's batch runner.

    Each ticker's data asset is an input of its own, `data_<i>` (`azureml:<name>:<version>`), and its
    champion model `champion_<i>`: the job records the lineage of every version it trained on. The command
    first stages them into one folder (`trainer_kit/stage_inputs.py`: batch.json and `<ticker>.csv` links),
    then runs `trainer_kit/batch.py` over it; `code` is the assembled job code (trainer folder + kit).
    Each ticker's model, metrics.json, test_errors.json and run.json land under `<output>/<ticker>/`, with
    `<output>/batch_summary.json`, on the default datastore at `batch_output_path(job)`."""
    _check_name("job name", request.job_name)
    _check_name("experiment name", request.experiment_name)
    try:
        trainer = get_trainer(request.trainer)
        params = param_pairs(request.hyperparameters)
    except TrainerError as exc:
        raise PlatformError(str(exc)) from exc
    if not request.entries:
        raise PlatformError(
            f"batch job {request.job_name} has no entries; send one "
            '{"ticker", "data": DataAsset dict, "champion": ModelRef dict | null} per ticker'
        )
    inputs: dict[str, Any] = {}
    stage = [f"python {KIT_NAME}/stage_inputs.py --into {BATCH_INPUTS_DIR}"]
    seen: set[str] = set()
    for i, entry in enumerate(request.entries):
        ticker = entry.get("ticker") if isinstance(entry, dict) else None
        if not isinstance(ticker, str) or not _BATCH_TICKER.match(ticker) or ticker in seen:
            raise PlatformError(
                f"batch entry {i}: ticker {ticker!r} must be a canonical symbol (such as MSFT, BRK.B or "
                "^GSPC), listed once"
            )
        seen.add(ticker)
        data = DataAsset.from_dict(entry["data"])
        inputs[f"data_{i}"] = Input(type=AssetTypes.URI_FILE, path=asset_ref(data.name, data.version))
        stage.append(f"--data {ticker}:${{{{inputs.data_{i}}}}}")
        if entry.get("champion"):
            champion = ModelRef.from_dict(entry["champion"])
            inputs[f"champion_{i}"] = Input(
                type=AssetTypes.MLFLOW_MODEL, path=asset_ref(champion.name, champion.version)
            )
            stage.append(f"--champion {ticker}:${{{{inputs.champion_{i}}}}}")
    run = [
        f"python {BATCH_RUNNER} --inputs {BATCH_INPUTS_DIR}",
        f"--output ${{{{outputs.{BATCH_OUTPUT}}}}}",
        f"--entry {trainer.entry_script}",
    ]
    for key, value in params:
        inputs[f"param_{key}"] = value
        run.append(f"--param {key}=${{{{inputs.param_{key}}}}}")
    tickers = [str(e["ticker"]) for e in request.entries]
    return command(
        name=request.job_name,
        display_name=f"train batch of {len(tickers)}: {short_list(tickers, 100)}",
        experiment_name=request.experiment_name,
        description=f"Retrain {len(tickers)} forecasters in one job ({trainer.name}): {short_list(tickers)}",
        code=str(code),
        command=" ".join(stage) + " && " + " ".join(run),
        inputs=inputs,
        # Upload mode: the runner writes on the node's disk (its per-ticker staging folders are renamed into
        # place, a plain local rename) and Azure ML uploads the folder when the job ends.
        outputs={
            BATCH_OUTPUT: Output(
                type=AssetTypes.URI_FOLDER, path=batch_output_path(request.job_name), mode="upload"
            )
        },
        environment=trainer_environment(repo_root, trainer.name),
        compute=compute,
        tags={
            TAG_INSTANCE_ID: request.instance_id,  # the Event Grid event wakes the batch's orchestration
            TAG_CODE_VERSION: request.code_version,
            TAG_TRAINER: trainer.name,
            TAG_BATCH_TICKERS: short_list(tickers),
        },
    )


def batch_model_path(job_name: str, ticker: str) -> str:
    """A batch job's model of one ticker, in the job's named output (the runner wrote it there)."""
    return f"azureml://jobs/{job_name}/outputs/{BATCH_OUTPUT}/paths/{ticker}/model/"


def batch_model_entity(name: str, version: str, job_name: str, ticker: str, tags: dict[str, str]) -> Model:
    _check_name("model name", name)
    return Model(
        name=name,
        version=str(version),
        type=AssetTypes.MLFLOW_MODEL,
        path=batch_model_path(job_name, ticker),
        description=f"Forecaster of {ticker} trained by batch job {job_name}",
        tags=_str_tags({**tags, TAG_JOB_NAME: job_name, TAG_TICKER: ticker}),
    )


def compute_cluster(name: str, size: str, max_nodes: int) -> AmlCompute:
    _check_name("compute name", name)
    if max_nodes < 1:
        raise PlatformError(f"AZUREML_COMPUTE_MAX_NODES={max_nodes}; it must be at least 1")
    # min 0: the cluster costs nothing between retraining runs.
    return AmlCompute(
        name=name,
        size=size,
        min_instances=0,
        max_instances=max_nodes,
        idle_time_before_scale_down=900,
        tier="dedicated",
    )


def job_model_path(job_name: str) -> str:
    """Where the trainer logs its MLflow model inside the job's run artifacts."""
    return f"azureml://jobs/{job_name}/outputs/artifacts/paths/model/"


def model_entity(name: str, version: str, job_name: str, tags: dict[str, str]) -> Model:
    _check_name("model name", name)
    return Model(
        name=name,
        version=str(version),
        type=AssetTypes.MLFLOW_MODEL,
        path=job_model_path(job_name),
        description=f"Forecaster trained by job {job_name}",
        tags=_str_tags({**tags, TAG_JOB_NAME: job_name}),
    )


def endpoint_entity(name: str) -> ManagedOnlineEndpoint:
    _check_name("endpoint name", name, _ENDPOINT_NAME)
    return ManagedOnlineEndpoint(
        name=name,
        auth_mode="key",
        description="Next-day close forecaster (blue/green)",
        tags={"app": "retrain"},
    )


# The data collector's collections every deployment enables, so Azure ML model monitoring has production
# data (docs/azure.md): the HTTP payloads (payload logging, no code), and the model's input and output
# tables under the names model monitoring reads (custom logging: the scoring script's Collector).
DATA_COLLECTIONS = ("model_inputs", "model_outputs", "request", "response")


def data_collector() -> DataCollector:
    """Data collection of an online deployment, every collection enabled (to the workspace's blob store)."""
    return DataCollector(
        collections={name: DeploymentCollection(enabled="true") for name in DATA_COLLECTIONS}
    )


def deployment_entity(
    endpoint: str, slot: str, model: ModelRef, instance_type: str, repo_root: Path = REPO_ROOT
) -> ManagedOnlineDeployment:
    _check_name("endpoint name", endpoint, _ENDPOINT_NAME)
    if slot not in SLOTS:
        raise PlatformError(f"slot {slot!r} is not one of {SLOTS}")
    return ManagedOnlineDeployment(
        name=slot,
        endpoint_name=endpoint,
        model=asset_ref(model.name, model.version),
        code_configuration=CodeConfiguration(code=str(repo_root / "scorer"), scoring_script="score.py"),
        environment=scorer_environment(repo_root),
        instance_type=instance_type,
        instance_count=1,
        # The slot server's settings, as the local endpoint's slots run (retrain/scoring_server.py); Azure
        # sends an instance at most this many requests at once (its default is 1).
        environment_variables=dict(SLOT_SERVER_ENVIRONMENT),
        request_settings=OnlineRequestSettings(max_concurrent_requests_per_instance=SLOT_CONCURRENT_REQUESTS),
        data_collector=data_collector(),
        # The deployment's tag says it serves a bundle: the ARM model id it reports back does not.
        tags=_str_tags(
            {"model": f"{model.name}:{model.version}", **({TAG_BUNDLE: "true"} if is_bundle(model) else {})}
        ),
    )


# Azure ML asset tags are short strings; a bundle's full lists are in its bundle.json.
BUNDLE_TAG_CHARS = 250


def short_list(values: list[str] | tuple[str, ...], limit: int = BUNDLE_TAG_CHARS) -> str:
    """Comma-joined values, cut to `limit` characters with a count of what was left out."""
    text = ",".join(values)
    if len(text) <= limit:
        return text
    kept: list[str] = []
    for value in values:
        suffix = f",...(+{len(values) - len(kept) - 1} more)"
        if len(",".join([*kept, value])) + len(suffix) > limit:
            break
        kept.append(value)
    return ",".join(kept) + f",...(+{len(values) - len(kept)} more)"


def bundle_entity(
    name: str,
    version: str,
    folder: Path,
    *,
    endpoint: str,
    parent_version: str | None,
    changed: list[str] | tuple[str, ...],
    removed: list[str] | tuple[str, ...],
    orchestration_ids: list[str] | tuple[str, ...],
    tickers: int,
) -> Model:
    """A model bundle (docs/bundles.md) as a registered custom model: the folder is uploaded as it is."""
    _check_name("bundle name", name)
    tags = {
        TAG_BUNDLE: "true",
        "endpoint": endpoint,
        "parent_version": parent_version or "",
        "changed": short_list(changed),
        "removed": short_list(removed),
        "orchestration_ids": short_list(orchestration_ids),
        "tickers": str(tickers),
    }
    return Model(
        name=name,
        version=str(version),
        type=AssetTypes.CUSTOM_MODEL,
        path=str(folder),
        description=f"Model bundle of endpoint {endpoint}: {tickers} tickers (bundle.json lists them)",
        tags={k: v for k, v in tags.items() if v},
    )


def data_asset(data: Data) -> DataAsset:
    """The port's value for a registered SDK `Data`."""
    return DataAsset(
        name=str(data.name),
        version=str(data.version),
        uri=asset_ref(str(data.name), str(data.version)),
        tags=dict(data.tags or {}),
    )


def model_ref(model: Model) -> ModelRef:
    return ModelRef(name=str(model.name), version=str(model.version), tags=dict(model.tags or {}))


_MODEL_ID = re.compile(
    r"(?:/models/(?P<n1>[^/]+)/versions/(?P<v1>[^/]+)$)|(?:^azureml:(?P<n2>[^:/]+):(?P<v2>[^:/]+)$)"
)


def deployment_model(dep: Any) -> ModelRef | None:
    """A deployment's model as the port reports it: a bundle's ref carries the `bundle` tag (from the
    deployment's tags: the model id Azure reports back has none)."""
    ref = parse_model_id(getattr(dep, "model", None))
    if ref is not None and str((getattr(dep, "tags", None) or {}).get(TAG_BUNDLE, "")).lower() == "true":
        return ModelRef(ref.name, ref.version, {TAG_BUNDLE: "true"})
    return ref


def parse_model_id(model: Any) -> ModelRef | None:
    """A deployment's model as a ModelRef, from an ARM id, an `azureml:name:version` or a Model."""
    if model is None:
        return None
    if isinstance(model, Model):
        return ModelRef(name=str(model.name), version=str(model.version))
    m = _MODEL_ID.search(str(model))
    if not m:
        return None
    return ModelRef(name=m.group("n1") or m.group("n2"), version=m.group("v1") or m.group("v2"))
