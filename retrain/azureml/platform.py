"""`AzureMLPlatform`: the `MLPlatform` port over azure-ai-ml.

Every call is short: long Azure operations (endpoint and deployment creation, traffic updates,
deletion) are started with `begin_*` and NOT waited on; the orchestrator polls `get_endpoint` /
`get_deployment` between durable timers until the endpoint is `Succeeded` with the traffic it asked
for, a deployment `Succeeded`, a deleted one `NotFound`. (The SDK's `LROPoller` keeps polling in a
daemon thread until the operation ends; we never block on it.) Repeated calls are idempotent: each
begins with a `get` of the target entity.

Azure allows one operation at a time per endpoint: a second one is refused with 409 Conflict, which
surfaces as `EndpointBusyError` (never retried quickly, see client.py); so does a call that would meet
an operation we can see in progress. A deployment that failed its first provisioning cannot be updated
(`begin_deployment` refuses it: delete it first).

Scoring (`invoke`) calls the endpoint's scoring URI directly with the endpoint key and explicit
headers; the URI and key are fetched once per endpoint and cached (refetched once on 401/403).

Metrics come from the job's MLflow run through the workspace's MLflow REST API
(`GET https://<region>.api.azureml.ms/mlflow/v2.0/<workspace id>/api/2.0/mlflow/runs/get?run_id=<job>`,
the `/mlflow/v2.0` route azureml-mlflow uses for MLflow 2 and 3) with azure-core and the MLClient's
credential, so the Function App needs no mlflow package. The MLflow and Blob pipelines are built once per
platform (one per process, `adapters.get_platform`): their bearer-token policy keeps its token until it
nears expiry instead of asking the identity endpoint on every call.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from retrain import settings
from retrain.azureml import entities
from retrain.azureml.client import TIMEOUT_OPTIONS, azure_call, call, endpoint_call, make_ml_client
from retrain.bundle_registry import bundle_entry, bundle_ref, check_request, same_or_refuse
from retrain.bundles import MANIFEST_FILE, BundleError, build_bundle, parse_manifest
from retrain.job_code import JobCodeError, assemble_job_code
from retrain.naming import bundle_name
from retrain.ports import (
    JOB_STATUSES,
    JOB_TERMINAL_STATUSES,
    MONITOR_RUN_NAME,
    MONITOR_RUN_TAG,
    SLOTS,
    BatchTrainingRequest,
    BundleRef,
    DataAsset,
    DeploymentState,
    EndpointBusyError,
    EndpointState,
    JobStatus,
    ModelRef,
    PlatformError,
    ScoringUnavailableError,
    TrainingRequest,
    TransientPlatformError,
    is_bundle,
    monitor_experiment_name,
    monitor_metric_point,
    retry_after_seconds,
)
from retrain.trainers import TrainerError, get_trainer
from retrain.vocabulary import FIT_END_TAGS, PROVISIONING_IN_PROGRESS, TAG_BUNDLE

ARM_SCOPE = "https://management.azure.com/.default"

# Azure provisioning states -> the port's vocabulary (Creating, Updating, Succeeded, Failed, Deleting, NotFound).
_PROVISIONING = {
    "creating": "Creating",
    "updating": "Updating",
    "scaling": "Updating",
    "succeeded": "Succeeded",
    "failed": "Failed",
    "canceled": "Failed",
    "cancelled": "Failed",
    "deleting": "Deleting",
}
_JOB_STATUS = {s.lower(): s for s in JOB_STATUSES} | {"cancelled": "Canceled"}
# States in which Azure refuses another operation on the endpoint or deployment (409 Conflict).
_IN_PROGRESS = PROVISIONING_IN_PROGRESS


def _text(raw: Any) -> str:
    """The wire value of an SDK enum member (`JobStatus.NOT_STARTED` -> "NotStarted") or a string."""
    return str(getattr(raw, "value", raw) or "").strip()


def map_job_status(raw: Any) -> str:
    """An Azure ML job status in the port's vocabulary (anything unrecognised is `Unknown`)."""
    return _JOB_STATUS.get(_text(raw).lower(), "Unknown")


def map_provisioning_state(raw: Any) -> str:
    """An endpoint/deployment provisioning state in the port's vocabulary. No state yet means the
    create was just accepted (Creating); an unrecognised one is treated as still in progress."""
    text = _text(raw)
    return _PROVISIONING.get(text.lower(), "Updating" if text else "Creating")


def _tag_true(tags: Mapping[str, Any] | None, key: str) -> bool:
    return str((tags or {}).get(key, "")).lower() == "true"


def _served(traffic: Mapping[str, Any] | None) -> dict[str, int]:
    """The slots that take traffic. Azure drops 0 % entries from a traffic update (the SDK strips them
    before the PUT), so two traffic maps are compared by their non-zero entries."""
    return {str(slot): int(pct) for slot, pct in (traffic or {}).items() if int(pct) > 0}


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if str(version).isdigit() else (1, str(version))


# The datastore of every job's MLflow artifacts, and the trainer's per-day test forecasts in it.
ARTIFACT_DATASTORE = "workspaceartifactstore"
TEST_ERRORS_ARTIFACT = "test_errors.json"
BATCH_SUMMARY = "batch_summary.json"  # trainer_kit/batch.py's summary, at the top of a batch job's output
# A job's `outputs.default` (its artifact folder), as Azure ML reports it:
# azureml://datastores/workspaceartifactstore/ExperimentRun/dcid.<job> (or .../datastores/<name>/paths/<path>).
_DATASTORE_URI = re.compile(r"^azureml://(?:.*/)?datastores/(?P<store>[^/]+)/(?:paths/)?(?P<path>.+?)/*\Z")
# The workspace's tracking URI names the MLflow 1 route; azureml-mlflow talks to MLflow 2 and 3 on this one.
MLFLOW_V1_ROUTE, MLFLOW_ROUTE = "/mlflow/v1.0/", "/mlflow/v2.0/"


def artifact_folder(job: Any) -> tuple[str, str]:
    """(datastore, folder) of a job's artifacts: its `outputs.default` when Azure ML reports one, else
    the artifact store's ExperimentRun/dcid.<job> (where `mlflow.log_artifact` inside a job writes)."""
    default = (getattr(job, "outputs", None) or {}).get("default")
    match = _DATASTORE_URI.match(str(getattr(default, "path", None) or ""))
    if match:
        return match["store"], match["path"]
    return ARTIFACT_DATASTORE, f"ExperimentRun/dcid.{job.name}"


def _shallowest(root: Path, filename: str) -> Path:
    """The shallowest folder under `root` holding `filename` (a download's nesting varies with the asset)."""
    found = sorted(root.rglob(filename), key=lambda p: (len(p.parts), str(p)))
    if not found:
        raise PlatformError(f"the downloaded model under {root.name} has no {filename}")
    return found[0].parent


class AzureMLPlatform:
    """The retraining workflow's platform, backed by one Azure ML workspace."""

    def __init__(
        self,
        ml_client: Any = None,
        *,
        environ: Mapping[str, str] | None = None,
        repo_root: Path = entities.REPO_ROOT,
        **pipeline_options: Any,
    ) -> None:
        self._environ = environ
        self._pipeline_options = pipeline_options
        self.ml_client = ml_client if ml_client is not None else make_ml_client(environ, **pipeline_options)
        self.repo_root = Path(repo_root)
        self.compute_name = str(settings.get("AZUREML_COMPUTE_NAME", environ))
        self.compute_size = str(settings.get("AZUREML_COMPUTE_SIZE", environ))
        self.compute_max_nodes = settings.get_int("AZUREML_COMPUTE_MAX_NODES", environ)
        self.instance_type = str(settings.get("AZUREML_ENDPOINT_INSTANCE_TYPE", environ))
        self._tracking_base: str | None = None
        self._scoring: dict[str, tuple[str, str]] = {}  # endpoint -> (scoring URI, key), fetched once
        self._scoring_pipeline: Any = None
        # Built once (first use), shared by every call and thread: one bearer token per expiry.
        self._clients_lock = threading.Lock()
        self._mlflow_client: Any = None
        self._blob_services: dict[str, Any] = {}  # account URL -> BlobServiceClient
        self._batch_outputs: dict[str, tuple[str, str, str]] = {}  # batch job -> its output's blob folder

    # ---- data assets -------------------------------------------------------------------------
    def register_data(self, name: str, version: str, csv_path: str, tags: dict[str, str]) -> DataAsset:
        existing = self._get_or_none(
            "get data asset", self.ml_client.data.get, name=name, version=str(version)
        )
        if existing is not None:
            return entities.data_asset(existing)
        if not Path(csv_path).is_file():
            raise PlatformError(f"{csv_path} is not a file; pass the CSV snapshot written by write_snapshot")
        created = call(
            f"register data asset {name}:{version}",
            self.ml_client.data.create_or_update,
            entities.data_entity(name, version, csv_path, tags),
        )
        return entities.data_asset(created)

    # ---- training ----------------------------------------------------------------------------
    def submit_training(self, request: TrainingRequest) -> str:
        if self._get_or_none("get job", self.ml_client.jobs.get, request.job_name) is not None:
            return request.job_name  # already submitted (the activity ran again)
        with self._job_code(request.trainer) as code:
            job = entities.training_job(request, self.compute_name, code, self.repo_root)
            self._ensure_compute()
            # The SDK uploads the code folder here (content-hashed: an unchanged folder is not uploaded again).
            created = call(
                f"submit training job {request.job_name}", self.ml_client.jobs.create_or_update, job
            )
        return str(created.name or request.job_name)

    @contextlib.contextmanager
    def _job_code(self, trainer_name: str) -> Iterator[Path]:
        """The job's code, as the local platform runs it: the trainer folder with the kit copied in, in a
        temporary folder that lives until the submit has uploaded it."""
        try:
            trainer = get_trainer(trainer_name)
        except TrainerError as exc:
            raise PlatformError(str(exc)) from exc
        parent = Path(tempfile.mkdtemp(prefix="job-code-"))
        try:
            yield assemble_job_code(trainer.folder_path(self.repo_root), parent)
        except JobCodeError as exc:
            raise PlatformError(str(exc)) from exc
        finally:
            shutil.rmtree(parent, ignore_errors=True)

    # ---- batch training jobs (ports.TrainsBatches) ---------------------------------------------
    def submit_batch_training(self, request: BatchTrainingRequest) -> str:
        """One command job per batch (docs/azure.md says why not a `parallel` job): code = the assembled
        folder, each ticker's data asset (and champion) an input of its own, the orchestration's id in its
        tags (its Event Grid event wakes the batch orchestration). A second submit is a no-op."""
        if self._get_or_none("get job", self.ml_client.jobs.get, request.job_name) is not None:
            return request.job_name  # already submitted (the activity ran again)
        with self._job_code(request.trainer) as code:
            job = entities.batch_training_job(request, self.compute_name, code, self.repo_root)
            self._ensure_compute()
            created = call(
                f"submit batch training job {request.job_name} ({len(request.entries)} tickers)",
                self.ml_client.jobs.create_or_update,
                job,
            )
        return str(created.name or request.job_name)

    def _batch_output(self, job_name: str) -> tuple[str, str, str]:
        """(account URL, container, folder) of a batch job's `output`: where the job says it is (as
        submitted: `entities.batch_output_path`), looked up once per job."""
        cached = self._batch_outputs.get(job_name)
        if cached is not None:
            return cached
        job = self._get_or_none("get job", self.ml_client.jobs.get, job_name)
        if job is None:
            raise PlatformError(f"job {job_name!r} does not exist in the workspace; was it submitted?")
        output = (getattr(job, "outputs", None) or {}).get(entities.BATCH_OUTPUT)
        match = _DATASTORE_URI.match(str(getattr(output, "path", None) or ""))
        if match is None:
            match = _DATASTORE_URI.match(entities.batch_output_path(job_name))
            assert match is not None
        store = call(f"get datastore {match['store']}", self.ml_client.datastores.get, match["store"])
        account_url = (
            f"{store.protocol or 'https'}://{store.account_name}.blob.{store.endpoint or 'core.windows.net'}"
        )
        location = (account_url, str(store.container_name), match["path"].rstrip("/"))
        self._batch_outputs[job_name] = location
        return location

    def _batch_file(self, job_name: str, relative: str) -> dict[str, Any] | None:
        """A JSON object from the batch job's output folder (read with the platform's identity), None
        when the blob does not exist."""
        from azure.core.exceptions import AzureError

        from retrain.azureml.client import to_platform_error

        account_url, container, folder = self._batch_output(job_name)
        blob = self._blob_service(account_url).get_blob_client(container, f"{folder}/{relative}")
        try:
            content = blob.download_blob().readall()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise to_platform_error(exc, f"download {relative} of batch job {job_name}") from exc
        try:
            payload = json.loads(content)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PlatformError(f"{relative} of batch job {job_name} is not valid JSON ({exc})") from exc
        if not isinstance(payload, dict):
            raise PlatformError(f"{relative} of batch job {job_name} is not a JSON object")
        return payload

    def get_batch_summary(self, job_name: str) -> dict[str, Any]:
        summary = self._batch_file(job_name, BATCH_SUMMARY)
        if summary is None:
            status = self.get_job(job_name)
            raise PlatformError(
                f"batch job {job_name} has no {BATCH_SUMMARY} (it is {status.status}); the batch runner "
                "writes it when the batch ends"
            )
        return summary

    def _batch_ticker_file(self, job_name: str, ticker: str, name: str) -> dict[str, Any] | None:
        """`<output>/<ticker>/<name>` of a trained ticker, None when it wrote no such file; an error naming
        the summary's reason when the ticker did not train (the runner renames a ticker's folder into
        place only when it is complete, so its run.json says it trained)."""
        found = self._batch_file(job_name, f"{ticker}/{name}")
        if found is not None or self._batch_file(job_name, f"{ticker}/run.json") is not None:
            return found
        entry = (self.get_batch_summary(job_name).get("tickers") or {}).get(ticker)
        if entry is None:
            raise PlatformError(f"ticker {ticker!r} is not in batch job {job_name}")
        raise PlatformError(f"{ticker} failed in batch job {job_name}: {entry.get('error') or entry}")

    def get_batch_metrics(self, job_name: str, ticker: str) -> dict[str, float]:
        values = self._batch_ticker_file(job_name, ticker, "metrics.json")
        if values is None:
            raise PlatformError(f"{ticker} of batch job {job_name} trained but wrote no metrics.json")
        return {
            k: float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }

    def get_batch_test_errors(self, job_name: str, ticker: str) -> dict[str, Any] | None:
        return self._batch_ticker_file(job_name, ticker, TEST_ERRORS_ARTIFACT)

    def register_batch_model(self, name: str, job_name: str, ticker: str, tags: dict[str, str]) -> ModelRef:
        """The ticker's model folder of the batch job's output, registered as an mlflow_model (its
        `azureml://jobs/<job>/outputs/output/paths/<ticker>/model/`); the same job and ticker again
        returns the existing version."""
        versions = self._model_versions(name)
        for model in versions:
            found = model.tags or {}
            if found.get(entities.TAG_JOB_NAME) == job_name and found.get(entities.TAG_TICKER) == ticker:
                return entities.model_ref(model)  # this job's model of the ticker is already registered
        status = self.get_job(job_name)
        if not status.succeeded:
            raise PlatformError(
                f"batch job {job_name} is {status.status}, not Completed; only a completed job's models register"
            )
        run = self._batch_ticker_file(job_name, ticker, "run.json") or {}  # an error if it did not train
        fit_ends = {key: str(run[key]) for key in FIT_END_TAGS if run.get(key)}
        numeric = [int(m.version) for m in versions if str(m.version).isdigit()]
        version = str(max(numeric, default=0) + 1)
        model = entities.batch_model_entity(name, version, job_name, ticker, {**tags, **fit_ends})
        created = call(f"register model {name}:{version}", self.ml_client.models.create_or_update, model)
        return entities.model_ref(created)

    def _ensure_compute(self) -> None:
        if self._get_or_none("get compute", self.ml_client.compute.get, self.compute_name) is not None:
            return
        cluster = entities.compute_cluster(self.compute_name, self.compute_size, self.compute_max_nodes)
        # Not awaited: Azure queues the job until the new cluster can take it.
        call(f"create compute {self.compute_name}", self.ml_client.compute.begin_create_or_update, cluster)

    def get_job_test_errors(self, job_name: str) -> dict[str, Any] | None:
        """The job's MLflow artifact test_errors.json, downloaded from the job's artifact folder (its
        `outputs.default`, else the artifact store's ExperimentRun/dcid.<job>/, `artifact_folder`), or None
        when the trainer logged none. Read with the platform's identity (Storage Blob Data Reader), no account key."""
        from azure.core.exceptions import AzureError

        from retrain.azureml.client import to_platform_error

        job = self._get_or_none("get job", self.ml_client.jobs.get, job_name)
        if job is None:  # an unknown job is an error, not "no test errors"
            self.get_job(job_name)
        datastore, folder = artifact_folder(job)
        store = call(f"get datastore {datastore}", self.ml_client.datastores.get, datastore)
        account_url = (
            f"{store.protocol or 'https'}://{store.account_name}.blob.{store.endpoint or 'core.windows.net'}"
        )
        blob = self._blob_service(account_url).get_blob_client(
            str(store.container_name), f"{folder}/{TEST_ERRORS_ARTIFACT}"
        )
        try:
            content = blob.download_blob().readall()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise to_platform_error(exc, f"download {TEST_ERRORS_ARTIFACT} of job {job_name}") from exc
        try:
            payload = json.loads(content)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PlatformError(
                f"{TEST_ERRORS_ARTIFACT} of job {job_name} is not valid JSON ({exc})"
            ) from exc
        return payload if isinstance(payload, dict) else None

    def get_job(self, job_name: str) -> JobStatus:
        job = self._get_or_none("get job", self.ml_client.jobs.get, job_name)
        if job is None:
            raise PlatformError(f"job {job_name!r} does not exist in the workspace; was it submitted?")
        status = map_job_status(job.status)
        error = None
        if status in ("Failed", "Canceled", "NotResponding", "Paused"):
            error = f"Azure ML job {job_name} ended {status}; see {job.studio_url or 'Azure ML studio'}"
        return JobStatus(job_name=job_name, status=status, error=error)

    def cancel_job(self, job_name: str) -> JobStatus | None:
        """`jobs.begin_cancel` (POST .../jobs/{name}/cancel), not waited on: Azure ML moves the job through
        CancelRequested to Canceled. A job that has ended, or is being canceled already, is left alone (Azure
        refuses to cancel a finished job); None when the workspace has no such job."""
        job = self._get_or_none("get job", self.ml_client.jobs.get, job_name)
        if job is None:
            return None
        if map_job_status(job.status) in (*JOB_TERMINAL_STATUSES, "CancelRequested"):
            return self.get_job(job_name)
        try:
            call(f"cancel training job {job_name}", self.ml_client.jobs.begin_cancel, job_name)
        except PlatformError:
            if not self.get_job(job_name).terminal:  # not "it ended meanwhile": a real failure
                raise
        return self.get_job(job_name)

    def get_job_metrics(self, job_name: str) -> dict[str, float]:
        run = self._mlflow_get("runs/get", {"run_id": job_name})
        latest: dict[str, tuple[int, int, float]] = {}
        for metric in (run.get("run") or {}).get("data", {}).get("metrics", []) or []:
            key, value = metric.get("key"), metric.get("value")
            if key is None or value is None:
                continue
            order = (int(metric.get("step") or 0), int(metric.get("timestamp") or 0))
            if key not in latest or order >= latest[key][:2]:
                latest[key] = (*order, float(value))
        return {key: entry[2] for key, entry in sorted(latest.items())}

    def _blob_service(self, account_url: str) -> Any:
        """The account's BlobServiceClient, built once: its blob clients share its token policy."""
        from azure.storage.blob import BlobServiceClient

        with self._clients_lock:
            service = self._blob_services.get(account_url)
            if service is None:
                options = {k: v for k, v in self._pipeline_options.items() if k == "transport"}
                service = BlobServiceClient(account_url, credential=self.ml_client._credential, **options)
                self._blob_services[account_url] = service
            return service

    def _mlflow_tracking_base(self) -> str:
        if self._tracking_base is None:
            ws = call("get workspace", self.ml_client.workspaces.get, self.ml_client.workspace_name)
            uri = str(ws.mlflow_tracking_uri or "")
            if not uri.startswith("azureml://"):
                raise PlatformError(f"workspace has no MLflow tracking URI (got {uri!r})")
            base = "https://" + uri[len("azureml://") :].rstrip("/")
            self._tracking_base = base.replace(MLFLOW_V1_ROUTE, MLFLOW_ROUTE, 1)
        return self._tracking_base

    def _mlflow_pipeline(self) -> Any:
        from azure.core import PipelineClient
        from azure.core.pipeline.policies import BearerTokenCredentialPolicy

        from retrain.azureml.client import retry_policy

        base = self._mlflow_tracking_base()
        with self._clients_lock:
            if self._mlflow_client is None:
                options = {k: v for k, v in self._pipeline_options.items() if k == "transport"}
                self._mlflow_client = PipelineClient(
                    base_url=base,
                    policies=[
                        retry_policy(**self._pipeline_options),
                        BearerTokenCredentialPolicy(self.ml_client._credential, ARM_SCOPE),
                    ],
                    **options,
                )
            return self._mlflow_client

    def _mlflow_call(
        self,
        method: str,
        api: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        expected_errors: tuple[str, ...] = (),
    ) -> tuple[str | None, dict[str, Any]]:
        """One call of the workspace's MLflow REST API: (None, answer), or (MLflow error code, answer) when
        the answer is an error whose code is in `expected_errors`; any other error is a PlatformError."""
        from azure.core.rest import HttpRequest

        base = self._mlflow_tracking_base()
        request = HttpRequest(method, f"{base}/api/2.0/mlflow/{api}", params=params, json=body)
        with azure_call(f"{'read' if method == 'GET' else 'write'} MLflow {api} {params or body}"):
            response = self._mlflow_pipeline().send_request(request)
            if response.status_code >= 400 and expected_errors:
                try:
                    answer = response.json()
                except ValueError:
                    answer = {}
                code = answer.get("error_code") if isinstance(answer, dict) else None
                if code in expected_errors:
                    return str(code), answer
            response.raise_for_status()
            return None, response.json() if response.content else {}

    def _mlflow_get(self, api: str, params: dict[str, str]) -> dict[str, Any]:
        from azure.core.rest import HttpRequest

        base = self._mlflow_tracking_base()
        request = HttpRequest("GET", f"{base}/api/2.0/mlflow/{api}", params=params)
        with azure_call(f"read MLflow {api} {params}"):
            response = self._mlflow_pipeline().send_request(request)
            if response.status_code == 404:
                raise PlatformError(f"no MLflow run {params}; the job may not have started logging yet")
            response.raise_for_status()
            return response.json()

    # ---- monitoring time series (the MLflow REST API: no mlflow package in the Function App) --------
    def log_monitor_metrics(self, ticker: str, day: str, metrics: dict[str, float]) -> None:
        name = monitor_experiment_name(ticker)
        step, stamp, kept = monitor_metric_point(day, metrics)
        if not kept:
            return
        experiment_id = self._monitor_experiment(name)
        run = self._monitor_run(experiment_id, ticker)
        run_id = str(run["info"]["run_id"])
        # The run's latest value of each metric says which days it has: a new day is after them, a replay
        # of the last day is on them; only an earlier day (a replay of an older span) needs the history.
        latest = {
            m["key"]: int(m.get("step") or 0)
            for m in (run.get("data") or {}).get("metrics", []) or []
            if "key" in m
        }
        new: dict[str, float] = {}
        for key, value in kept.items():
            last = latest.get(key)
            if last is not None and step == last:
                continue
            if last is not None and step < last:
                _, history = self._mlflow_call(
                    "GET", "metrics/get-history", params={"run_id": run_id, "metric_key": key}
                )
                if any(int(m.get("step") or 0) == step for m in history.get("metrics", []) or []):
                    continue
            new[key] = value
        if new:
            self._mlflow_call(
                "POST",
                "runs/log-batch",
                body={
                    "run_id": run_id,
                    "metrics": [
                        {"key": key, "value": value, "timestamp": stamp, "step": step}
                        for key, value in sorted(new.items())
                    ],
                },
            )

    def _monitor_experiment(self, name: str) -> str:
        for _ in range(2):
            missing, found = self._mlflow_call(
                "GET",
                "experiments/get-by-name",
                params={"experiment_name": name},
                expected_errors=("RESOURCE_DOES_NOT_EXIST",),
            )
            if not missing:
                return str(found["experiment"]["experiment_id"])
            exists, created = self._mlflow_call(
                "POST",
                "experiments/create",
                body={"name": name},
                expected_errors=("RESOURCE_ALREADY_EXISTS",),
            )
            if not exists:
                return str(created["experiment_id"])
            # Created meanwhile by another monitor: read it again.
        raise PlatformError(f"MLflow experiment {name} neither exists nor can be created")

    def _monitor_run(self, experiment_id: str, ticker: str) -> dict[str, Any]:
        _, found = self._mlflow_call(
            "POST",
            "runs/search",
            body={
                "experiment_ids": [experiment_id],
                "filter": f"tags.{MONITOR_RUN_TAG} = '{ticker}'",
                "max_results": 1,
            },
        )
        runs = found.get("runs") or []
        if runs:
            return runs[0]
        _, created = self._mlflow_call(
            "POST",
            "runs/create",
            body={
                "experiment_id": experiment_id,
                "run_name": MONITOR_RUN_NAME,
                "start_time": int(time.time() * 1000),
                "tags": [
                    {"key": MONITOR_RUN_TAG, "value": ticker},
                    {"key": "mlflow.runName", "value": MONITOR_RUN_NAME},
                ],
            },
        )
        return created["run"]

    # ---- models ------------------------------------------------------------------------------
    def _model_versions(self, name: str) -> list[Any]:
        with azure_call(f"list model versions of {name}"):
            try:
                return list(self.ml_client.models.list(name=name))
            except ResourceNotFoundError:
                return []

    def register_model(self, name: str, job_name: str, tags: dict[str, str]) -> ModelRef:
        versions = self._model_versions(name)
        for model in versions:
            if (model.tags or {}).get(entities.TAG_JOB_NAME) == job_name:
                return entities.model_ref(model)  # this job's model is already registered
        numeric = [int(m.version) for m in versions if str(m.version).isdigit()]
        version = str(max(numeric, default=0) + 1)
        model = entities.model_entity(name, version, job_name, {**tags, **self._fit_end_tags(job_name)})
        created = call(f"register model {name}:{version}", self.ml_client.models.create_or_update, model)
        return entities.model_ref(created)

    def _fit_end_tags(self, job_name: str) -> dict[str, str]:
        """The fit ends the trainer set on the job's MLflow run (`fitted_data_end`, `evaluation_fit_end`),
        for the model version's tags; none from a run that has none (a trainer older than the refit)."""
        missing, answer = self._mlflow_call(
            "GET", "runs/get", params={"run_id": job_name}, expected_errors=("RESOURCE_DOES_NOT_EXIST",)
        )
        if missing:
            return {}
        run_tags = {
            str(t.get("key")): str(t.get("value"))
            for t in ((answer.get("run") or {}).get("data") or {}).get("tags") or []
        }
        return {key: run_tags[key] for key in FIT_END_TAGS if run_tags.get(key)}

    def get_champion(self, name: str) -> ModelRef | None:
        champions = [m for m in self._model_versions(name) if _tag_true(m.tags, entities.TAG_CHAMPION)]
        if not champions:
            return None
        return entities.model_ref(max(champions, key=lambda m: _version_key(str(m.version))))

    def set_champion(self, model: ModelRef) -> None:
        target = call(
            f"get model {model.name}:{model.version}",
            self.ml_client.models.get,
            name=model.name,
            version=model.version,
        )
        if not _tag_true(target.tags, entities.TAG_CHAMPION):
            target.tags = {**(target.tags or {}), entities.TAG_CHAMPION: "true"}
            call(
                f"mark {model.name}:{model.version} champion", self.ml_client.models.create_or_update, target
            )
        # Then un-mark the others: for a moment two versions may carry the tag, never none.
        for other in self._model_versions(model.name):
            if str(other.version) != str(model.version) and _tag_true(other.tags, entities.TAG_CHAMPION):
                full = call("get model", self.ml_client.models.get, name=other.name, version=other.version)
                full.tags = {k: v for k, v in (full.tags or {}).items() if k != entities.TAG_CHAMPION}
                call(f"unmark {other.name}:{other.version}", self.ml_client.models.create_or_update, full)

    # ---- model bundles (ports.MLPlatform) ---------------------------------------------------
    def register_bundle(
        self,
        endpoint: str,
        version: str,
        parent: BundleRef | None,
        changes: dict[str, ModelRef],
        orchestration_ids: list[str],
        removed: list[str] | None = None,
    ) -> BundleRef:
        """Version `version` of the endpoint's bundle as a registered custom model (a folder): the parent
        bundle and each changed model are downloaded (`models.download`), the folder is built with
        `build_bundle` in a temporary directory and uploaded by `models.create_or_update`. A version that
        exists already is returned when it holds the same models (a replayed activity), else refused."""
        name, changes, gone = check_request(endpoint, version, parent, changes, removed)
        existing = self._get_or_none("get bundle", self.ml_client.models.get, name=name, version=version)
        if existing is not None:
            return same_or_refuse(self._bundle_of(existing), parent, changes, gone)
        with tempfile.TemporaryDirectory(prefix="retrain-bundle-") as work:
            root = Path(work)
            parent_dir = None
            if parent is not None:
                parent_dir = _shallowest(
                    self._download(parent.name, parent.version, root / "parent"), MANIFEST_FILE
                )
            entries = {}
            for ticker, model in changes.items():
                registered = call(
                    f"get model {model.name}:{model.version}",
                    self.ml_client.models.get,
                    name=model.name,
                    version=str(model.version),
                )
                folder = _shallowest(
                    self._download(model.name, str(model.version), root / "models" / ticker), "MLmodel"
                )
                entries[ticker] = (folder, bundle_entry(model, dict(registered.tags or {})))
            try:
                manifest = build_bundle(
                    root / "bundle",
                    parent_dir,
                    entries,
                    name=name,
                    version=version,
                    endpoint=endpoint,
                    orchestration_ids=orchestration_ids,
                    removed=gone,
                )
            except BundleError as exc:
                raise PlatformError(f"bundle {name}:{version} was not built: {exc}") from exc
            entity = entities.bundle_entity(
                name,
                version,
                root / "bundle",
                endpoint=endpoint,
                parent_version=manifest.parent_version,
                changed=manifest.changed,
                removed=manifest.removed,
                orchestration_ids=manifest.orchestration_ids,
                tickers=len(manifest.tickers),
            )
            call(f"register bundle {name}:{version}", self.ml_client.models.create_or_update, entity)
        return bundle_ref(manifest)

    def get_bundle(self, endpoint: str, version: str) -> BundleRef | None:
        """The registered bundle's manifest: only its bundle.json is downloaded (a blob read with the
        platform's identity), not the models."""
        model = self._get_or_none(
            "get bundle", self.ml_client.models.get, name=bundle_name(endpoint), version=str(version)
        )
        return None if model is None else self._bundle_of(model)

    def _download(self, name: str, version: str, dest: Path) -> Path:
        """A registered model version's files under `dest` (`models.download`: `<dest>/<name>/...`)."""
        dest.mkdir(parents=True, exist_ok=True)
        call(f"download model {name}:{version}", self.ml_client.models.download, name, version, str(dest))
        return dest

    def _bundle_of(self, model: Any) -> BundleRef:
        from azure.core.exceptions import AzureError

        from retrain.azureml.client import to_platform_error

        where = f"bundle {model.name}:{model.version}"
        match = _DATASTORE_URI.match(str(model.path or ""))
        if match is None:
            raise PlatformError(f"{where} has no datastore path ({model.path!r}); it is not a bundle folder")
        store = call(f"get datastore {match['store']}", self.ml_client.datastores.get, match["store"])
        account_url = (
            f"{store.protocol or 'https'}://{store.account_name}.blob.{store.endpoint or 'core.windows.net'}"
        )
        blob = self._blob_service(account_url).get_blob_client(
            str(store.container_name), f"{match['path'].rstrip('/')}/{MANIFEST_FILE}"
        )
        try:
            document = json.loads(blob.download_blob().readall())
        except ResourceNotFoundError:
            raise PlatformError(f"{where} holds no {MANIFEST_FILE}; it is not a bundle") from None
        except AzureError as exc:
            raise to_platform_error(exc, f"download {MANIFEST_FILE} of {where}") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PlatformError(f"{MANIFEST_FILE} of {where} is not valid JSON ({exc})") from exc
        try:
            return bundle_ref(parse_manifest(document))
        except BundleError as exc:
            raise PlatformError(f"{where}: {exc}") from exc

    # ---- endpoint ----------------------------------------------------------------------------
    def begin_create_endpoint(self, name: str) -> EndpointState:
        if self._get_or_none("get endpoint", self.ml_client.online_endpoints.get, name) is not None:
            return self.get_endpoint(name)
        endpoint_call(
            name,
            f"create endpoint {name}",
            self.ml_client.online_endpoints.begin_create_or_update,
            entities.endpoint_entity(name),
        )
        return EndpointState(name=name, state="Creating")

    def get_endpoint(self, name: str) -> EndpointState:
        endpoint = self._get_or_none("get endpoint", self.ml_client.online_endpoints.get, name)
        if endpoint is None:
            return EndpointState(name=name, state="NotFound")
        deployments: dict[str, dict[str, Any] | None] = {}
        with azure_call(f"list deployments of {name}"):
            for dep in self.ml_client.online_deployments.list(endpoint_name=name):
                if dep.name in SLOTS:
                    ref = entities.deployment_model(dep)
                    deployments[dep.name] = ref.to_dict() if ref else None
        return EndpointState(
            name=name,
            state=map_provisioning_state(endpoint.provisioning_state),
            scoring_uri=endpoint.scoring_uri,
            # Every deployed slot appears, 0 % when Azure's map leaves it out (it drops zero entries), so
            # the traffic compares equal to what set_traffic was asked, e.g. {"green": 100, "blue": 0}.
            traffic={**{slot: 0 for slot in deployments}, **_served(endpoint.traffic)},
            deployments=deployments,
        )

    def begin_deployment(self, endpoint: str, slot: str, model: ModelRef) -> DeploymentState:
        entity = entities.deployment_entity(endpoint, slot, model, self.instance_type, self.repo_root)
        existing = self._get_or_none(
            "get deployment", self.ml_client.online_deployments.get, name=slot, endpoint_name=endpoint
        )
        if existing is not None:
            current = self._deployment_state(endpoint, slot, existing)
            same_model = current.model is not None and (
                current.model["name"],
                str(current.model["version"]),
            ) == (model.name, str(model.version))
            if same_model and current.state in ("Creating", "Updating", "Succeeded"):
                return current  # the activity ran again: the rollout of this model is under way
            if current.state == "Failed":
                # Azure cannot update a deployment whose provisioning failed: it must be recreated.
                raise PlatformError(
                    f"deployment {endpoint}/{slot} is Failed and cannot be updated; delete it first "
                    f"(begin_delete_deployment, wait for NotFound), then deploy {model.name}:{model.version}"
                )
            if current.state in _IN_PROGRESS:
                raise EndpointBusyError(
                    f"deployment {endpoint}/{slot} is {current.state}; wait until it is Succeeded or "
                    f"NotFound before deploying {model.name}:{model.version}"
                )
        endpoint_call(
            endpoint,
            f"deploy {model.name}:{model.version} to {endpoint}/{slot}",
            self.ml_client.online_deployments.begin_create_or_update,
            entity,
        )
        return DeploymentState(
            endpoint=endpoint,
            slot=slot,
            state="Updating" if existing else "Creating",
            model=ModelRef(
                model.name, model.version, {TAG_BUNDLE: "true"} if is_bundle(model) else {}
            ).to_dict(),
        )

    def get_deployment(self, endpoint: str, slot: str) -> DeploymentState:
        dep = self._get_or_none(
            "get deployment", self.ml_client.online_deployments.get, name=slot, endpoint_name=endpoint
        )
        if dep is None:
            return DeploymentState(endpoint=endpoint, slot=slot, state="NotFound")
        return self._deployment_state(endpoint, slot, dep)

    @staticmethod
    def _deployment_state(endpoint: str, slot: str, dep: Any) -> DeploymentState:
        raw = getattr(dep, "provisioning_state", None)
        state = map_provisioning_state(raw)
        ref = entities.deployment_model(dep)
        error = (
            f"deployment {endpoint}/{slot} ended {_text(raw)}; see its logs in Azure ML studio"
            if state == "Failed"
            else None
        )
        return DeploymentState(
            endpoint=endpoint, slot=slot, state=state, model=ref.to_dict() if ref else None, error=error
        )

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> EndpointState:
        unknown = sorted(set(traffic) - set(SLOTS))
        total = sum(int(v) for v in traffic.values())
        # All 0 % is "no slot serves" (a first model rolled back): Azure takes it, the SDK strips the
        # 0 % entries and PUTs `traffic: {}`, and unpinned requests then answer 404.
        if unknown or any(int(v) < 0 for v in traffic.values()) or total not in (0, 100):
            raise PlatformError(
                f"traffic {traffic} is invalid; give percentages for {SLOTS} that sum to 100 "
                "(or all 0: no slot serves)"
            )
        current = call(f"get endpoint {endpoint}", self.ml_client.online_endpoints.get, endpoint)
        asked = {slot: int(pct) for slot, pct in traffic.items()}
        state = map_provisioning_state(current.provisioning_state)
        if _served(current.traffic) == _served(asked):
            # Already asked (the activity ran again) or already so: report the endpoint as it is.
            return EndpointState(name=endpoint, state=state, scoring_uri=current.scoring_uri, traffic=asked)
        if state in _IN_PROGRESS:
            raise EndpointBusyError(
                f"endpoint {endpoint} is {state}; wait until it is Succeeded before setting traffic {traffic}"
            )
        current.traffic = {slot: int(pct) for slot, pct in traffic.items()}
        # A long-running operation: the endpoint reports Updating until Azure has applied the traffic.
        endpoint_call(
            endpoint,
            f"set traffic of {endpoint} to {traffic}",
            self.ml_client.online_endpoints.begin_create_or_update,
            current,
        )
        return EndpointState(name=endpoint, state="Updating", scoring_uri=current.scoring_uri, traffic=asked)

    def invoke(self, endpoint: str, payload: dict[str, Any], slot: str | None = None) -> dict[str, Any]:
        """POST the payload to the endpoint's scoring URI (pinned to `slot` with the
        `azureml-model-deployment` header when given). Every request carries its own headers; the
        scoring URI and key come from `prepare_invoke`'s cache, so only the scoring call itself is slow."""
        for attempt in (1, 2):
            scoring_uri, key = self.prepare_invoke(endpoint)
            status, text, retry_after = self._post_score(endpoint, scoring_uri, key, payload, slot)
            if status in (401, 403) and attempt == 1:
                self._scoring.pop(endpoint, None)  # the key was regenerated: fetch it again, once
                continue
            break
        target = f"endpoint {endpoint}" + (f" slot {slot}" if slot else "")
        if status == 404 and not slot:
            raise PlatformError(
                f"{target} answered 404 ({text[:200]}): no deployment takes traffic yet; pin a slot "
                "or wait until the traffic update has applied"
            )
        wait = retry_after_seconds(retry_after) if status in (429, 503) else None
        if wait is not None:  # no deployment can answer yet (or throttled): the caller may wait and retry
            raise ScoringUnavailableError(f"{target} answered HTTP {status}: {text[:200]}", wait)
        if status >= 400:
            error = TransientPlatformError if status in (408, 429, 500, 502, 503, 504) else PlatformError
            raise error(f"{target} answered HTTP {status}: {text[:200]}")
        try:
            answer = json.loads(text)
            # score.py's answer may arrive JSON-encoded twice (a str returned from run()).
            return json.loads(answer) if isinstance(answer, str) else answer
        except (TypeError, json.JSONDecodeError) as exc:
            raise PlatformError(f"{target} answered non-JSON: {text[:200]!r}") from exc

    def prepare_invoke(self, endpoint: str) -> tuple[str, str]:
        """The endpoint's scoring URI and key, fetched from ARM once per endpoint and cached."""
        cached = self._scoring.get(endpoint)
        if cached is None:
            found = call(f"get endpoint {endpoint}", self.ml_client.online_endpoints.get, endpoint)
            if not found.scoring_uri:
                raise TransientPlatformError(
                    f"endpoint {endpoint} has no scoring URI yet; it is still Creating"
                )
            keys = call(f"get keys of {endpoint}", self.ml_client.online_endpoints.get_keys, endpoint)
            key = getattr(keys, "primary_key", None) or getattr(keys, "access_token", None)
            if not key:
                raise PlatformError(f"endpoint {endpoint} returned no key; it must use key authentication")
            cached = self._scoring[endpoint] = (str(found.scoring_uri), str(key))
        return cached

    def _post_score(
        self, endpoint: str, scoring_uri: str, key: str, payload: dict[str, Any], slot: str | None
    ) -> tuple[int, str, str | None]:
        """(status, body, the Retry-After header or None) of one scoring request."""
        from azure.core import PipelineClient
        from azure.core.rest import HttpRequest

        if self._scoring_pipeline is None:
            # No retry policy: a smoke test reports what one scoring call does, and how long it takes.
            options = {k: v for k, v in self._pipeline_options.items() if k == "transport"}
            self._scoring_pipeline = PipelineClient(base_url=scoring_uri, policies=[], **options)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        if slot:
            headers["azureml-model-deployment"] = slot
        request = HttpRequest("POST", scoring_uri, headers=headers, content=json.dumps(payload))
        timeouts = {
            k: v for k, v in {**TIMEOUT_OPTIONS, **self._pipeline_options}.items() if k in TIMEOUT_OPTIONS
        }
        with azure_call(f"score through {endpoint}" + (f"/{slot}" if slot else "")):
            response = self._scoring_pipeline.send_request(request, **timeouts)
            return response.status_code, response.text(), response.headers.get("Retry-After")

    def begin_delete_deployment(self, endpoint: str, slot: str) -> DeploymentState:
        existing = self._get_or_none(
            "get deployment", self.ml_client.online_deployments.get, name=slot, endpoint_name=endpoint
        )
        if existing is None:
            return DeploymentState(endpoint=endpoint, slot=slot, state="NotFound")
        if map_provisioning_state(existing.provisioning_state) != "Deleting":
            endpoint_call(
                endpoint,
                f"delete deployment {endpoint}/{slot}",
                self.ml_client.online_deployments.begin_delete,
                name=slot,
                endpoint_name=endpoint,
            )
        return DeploymentState(
            endpoint=endpoint,
            slot=slot,
            state="Deleting",
            model=(lambda r: r.to_dict() if r else None)(entities.deployment_model(existing)),
        )

    # ---- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _get_or_none(action: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with azure_call(action):
            try:
                return fn(*args, **kwargs)
            except ResourceNotFoundError:
                return None
            except HttpResponseError as exc:
                if exc.status_code == 404:
                    return None
                raise
