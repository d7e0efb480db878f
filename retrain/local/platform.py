"""The embedded ML platform: `MLPlatform` on one machine, under a state directory.

    <state>/data/<name>/<version>/{data.csv,asset.json}   immutable data assets
    <state>/jobs/<job>/{job.json,status.json,std_log.txt,code/,outputs/,event.json}   training jobs
    <state>/jobs/<job>/inputs/{batch.json,<TICKER>.csv}    a batch job's inputs (docs/trainer-contract.md)
    <state>/mlflow/mlflow.db, <state>/mlflow/artifacts/   tracking store and model registry
    <state>/endpoints/<endpoint>/...                      blue/green slots (see endpoint.py)
    <state>/bundles/<bundle name>/<version>/              model bundles (see bundle_store.py)

Jobs run detached (`retrain.local.jobs`), so a job outlives the process that submitted it, and deliver
the Azure ML Event Grid event to the local Functions host when they end. A job runs its code as Azure ML
does: the trainer folder with the trainer kit copied in (`retrain.job_code.assemble_job_code`), kept in
the job's `code/` folder. A batch job (`TrainsBatches`) is one runner process running the kit's batch
runner over many tickers; at most `RETRAIN_LOCAL_BATCH_JOBS` batch jobs train at once (the others wait
Queued for a slot), so several fleet batches never oversubscribe the machine's cores.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retrain import settings
from retrain.job_code import BATCH_RUNNER, JobCodeError, assemble_job_code
from retrain.local import jobs
from retrain.local.bundle_store import LocalBundles, local_artifact_dir, temporary_download
from retrain.local.endpoint import LocalEndpoints
from retrain.local.processes import (
    process_alive,
    process_start_ticks,
    read_json,
    stop_whole_process_group,
    write_json_atomic,
)
from retrain.ports import (
    MONITOR_RUN_NAME,
    MONITOR_RUN_TAG,
    BatchTrainingRequest,
    BundleRef,
    DataAsset,
    DeploymentState,
    EndpointState,
    JobStatus,
    ModelRef,
    PlatformError,
    TrainingRequest,
    monitor_experiment_name,
    monitor_metric_point,
)
from retrain.trainers import Trainer, TrainerError, get_trainer, param_args
from retrain.vocabulary import (
    FIT_END_TAGS,
    JOB_ENDED_STATUSES,
    TAG_BATCH_TICKERS,
    TAG_CHAMPION,
    TAG_CHAMPION_VERSION,
    TAG_CODE_VERSION,
    TAG_DATA_ASSET,
    TAG_DATA_VERSION,
    TAG_INSTANCE_ID,
    TAG_JOB_NAME,
    TAG_TICKER,
    TAG_TRAINER,
)

log = logging.getLogger("retrain.local.platform")

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAMPION_ALIAS = TAG_CHAMPION  # an MLflow alias: the local twin of the Azure tag
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
# A batch ticker names its data file and output folder: a canonical symbol (retrain.naming), starting with
# a letter, digit or '^' as the batch runner requires.
_BATCH_TICKER = re.compile(r"^[A-Z0-9^][A-Z0-9.^=-]{0,14}\Z")
BATCH_SUMMARY = "batch_summary.json"  # trainer_kit/batch.py's SUMMARY
BATCH_SLOTS_SETTING = "RETRAIN_LOCAL_BATCH_JOBS"


def _safe(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _SAFE_NAME.match(value) or ".." in value:
        raise PlatformError(
            f"{kind} {value!r} is invalid: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_MLFLOW_LOCK = threading.RLock()
_mlflow_imported = False


def import_mlflow() -> None:
    """Import MLflow's modules once, in one thread. Concurrent first imports of different mlflow
    submodules (five cycles reaching get_champion and submit_training at once on a fresh host) deadlock in
    importlib and leave "partially initialized module 'mlflow'" errors for the rest of the process."""
    global _mlflow_imported
    if _mlflow_imported:
        return
    with _MLFLOW_LOCK:
        if not _mlflow_imported:
            import mlflow  # noqa: F401
            import mlflow.exceptions  # noqa: F401
            import mlflow.tracking  # noqa: F401

            _mlflow_imported = True


class LocalPlatform:
    """`MLPlatform` on the local machine (see the module docstring for the layout)."""

    def __init__(
        self,
        state_dir: Path | str,
        host_url: str | None = None,
        trainer_script: Path | None = None,
        scorer_script: Path | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # Where job events go: set by the local host once it listens (or RETRAIN_LOCAL_HOST_URL).
        self.host_url = host_url
        # A fixed script overrides the request's trainer (tests); normally the request names a
        # registered trainer and its folder's entry script runs.
        self.trainer_script = Path(trainer_script).resolve() if trainer_script else None
        self.scorer_script = Path(scorer_script or REPO_ROOT / "scorer" / "score.py").resolve()
        self.mlflow_dir = self.state_dir / "mlflow"
        self.mlflow_dir.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"
        self.artifact_root = self.mlflow_dir / "artifacts"
        self._client: Any = None
        self.endpoints = LocalEndpoints(self.state_dir, self._fetch_model, self.scorer_script)
        self.bundles = LocalBundles(self.state_dir, self._model_source, self._lock)

    # -- helpers ----------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The MLflow client on the local store (imported lazily: MLflow is slow to import), created once
        with its stores under a lock (see `import_mlflow`)."""
        if self._client is None:
            import_mlflow()
            with _MLFLOW_LOCK:
                if self._client is None:
                    from mlflow.tracking import MlflowClient

                    from retrain.local.mlflow_store import create_store_from_template

                    # A new store starts as a copy of the empty one MLflow migrated once on this machine.
                    create_store_from_template(self.mlflow_dir / "mlflow.db")
                    client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
                    # First use creates the SQLite stores (and imports their modules): once, here.
                    client.search_experiments(max_results=1)
                    client.search_registered_models(max_results=1)
                    self._client = client
        return self._client

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        locks = self.state_dir / "locks"
        locks.mkdir(exist_ok=True)
        with (locks / f"{name}.lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- data assets -----------------------------------------------------------------------------

    def register_data(self, name: str, version: str, csv_path: str, tags: dict[str, str]) -> DataAsset:
        _safe("data asset name", name)
        _safe("data asset version", version)
        source = Path(csv_path)
        if not source.is_file():
            raise PlatformError(
                f"data file {csv_path} does not exist; pass the path of the CSV snapshot to register"
            )
        sha = _sha256(source)
        target = self.state_dir / "data" / name / version
        with self._lock(f"data-{name}"):
            if (target / "asset.json").is_file():
                return self._existing_asset(target, sha)
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=target.parent))
            try:
                shutil.copyfile(source, staging / "data.csv")
                if _sha256(staging / "data.csv") != sha:
                    raise PlatformError(
                        f"{csv_path} changed while it was being registered; register it again"
                    )
                meta = {
                    "name": name,
                    "version": version,
                    "tags": {str(k): str(v) for k, v in tags.items()},
                    "sha256": sha,
                    "created": datetime.now(UTC).isoformat(),
                    "source": str(source),
                }
                write_json_atomic(staging / "asset.json", meta)
                os.rename(staging, target)  # the whole version appears at once, or not at all
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return self._asset(target, meta)

    def _existing_asset(self, target: Path, sha: str) -> DataAsset:
        meta = read_json(target / "asset.json")
        if meta["sha256"] != sha:
            raise PlatformError(
                f"data asset {meta['name']} version {meta['version']} already exists with different content "
                f"(sha256 {meta['sha256'][:12]}, yours {sha[:12]}); versions are immutable: register the new "
                "content under a new version"
            )
        return self._asset(target, meta)

    @staticmethod
    def _asset(target: Path, meta: dict[str, Any]) -> DataAsset:
        return DataAsset(
            name=meta["name"], version=meta["version"], uri=str(target / "data.csv"), tags=meta["tags"]
        )

    def get_data(self, name: str, version: str) -> DataAsset:
        target = (
            self.state_dir / "data" / _safe("data asset name", name) / _safe("data asset version", version)
        )
        if not (target / "asset.json").is_file():
            raise PlatformError(f"no data asset {name} version {version}; register it first")
        return self._asset(target, read_json(target / "asset.json"))

    # -- training jobs ----------------------------------------------------------------------------

    def _job_dir(self, job_name: str) -> Path:
        return self.state_dir / "jobs" / _safe("job name", job_name)

    def _experiment_id(self, name: str) -> str:
        import_mlflow()
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        location = (self.artifact_root / re.sub(r"[^A-Za-z0-9._-]", "_", name)).as_uri()
        try:
            return str(self.client.create_experiment(name, artifact_location=location))
        except MlflowException:  # created meanwhile by another process
            return str(self.client.get_experiment_by_name(name).experiment_id)

    def submit_training(self, request: TrainingRequest) -> str:
        job_dir = self._job_dir(request.job_name)
        try:
            trainer = get_trainer(request.trainer)
            flags = param_args(request.hyperparameters)
        except TrainerError as exc:
            raise PlatformError(str(exc)) from exc
        source_script = self.trainer_script or trainer.script_path(REPO_ROOT)
        if not source_script.is_file():
            raise PlatformError(f"trainer script {source_script} not found")
        data_csv = self._data_csv(request.data_asset)
        asset = request.data_asset

        with self._lock(f"job-{request.job_name}"):
            if (job_dir / "runner.json").is_file() or self._adopt_runner(job_dir):
                return request.job_name  # submitted before: a no-op, as the port promises
            job_dir.mkdir(parents=True, exist_ok=True)
            # The job runs its own copy of the code, as an Azure ML job runs its snapshot: the trainer
            # folder plus the kit, so train.py may import trainer_kit in both worlds.
            code = self._job_code(trainer, job_dir)
            script = self.trainer_script or code / trainer.entry_script
            tags = {
                TAG_INSTANCE_ID: request.instance_id,
                TAG_TICKER: request.ticker,
                TAG_DATA_ASSET: asset.name,
                TAG_DATA_VERSION: asset.version,
                TAG_CODE_VERSION: request.code_version,
                TAG_JOB_NAME: request.job_name,
                TAG_TRAINER: trainer.name,
            }
            experiment_id = self._experiment_id(request.experiment_name)
            run_id = self._find_or_create_run(experiment_id, request.job_name, tags)
            command = [
                sys.executable,
                str(script),
                "--data",
                str(data_csv),
                "--output",
                str(job_dir / "outputs"),
                *flags,
            ]
            champion = request.champion_model
            if champion is not None:
                champion_dir = job_dir / "champion"
                if not (champion_dir / "model").is_dir():
                    self._fetch_model(champion, champion_dir)
                command += ["--champion-model", str(champion_dir / "model")]
                tags[TAG_CHAMPION_VERSION] = champion.version
            spec = {
                "job_name": request.job_name,
                "experiment_name": request.experiment_name,
                "experiment_id": experiment_id,
                "run_id": run_id,
                "tracking_uri": self.tracking_uri,
                "state_dir": str(self.state_dir),
                "tags": tags,
                "command": command,
                "cwd": str(job_dir),
                "env": self._env(run_id, request.experiment_name),
                "host_url": self.host_url or os.environ.get(jobs.HOST_URL_ENV),
                "submitted": jobs.utc_now(),
            }
            self._launch(job_dir, spec)
        return request.job_name

    def _launch(self, job_dir: Path, spec: dict[str, Any]) -> None:
        """Write the job's spec and start its detached runner (under the job's lock; the submit has checked
        that no runner holds the job, `_adopt_runner`)."""
        write_json_atomic(job_dir / "job.json", spec)
        jobs.update_status(job_dir, "Queued", error=None)
        with (job_dir / "runner.log").open("ab") as runner_log:
            runner = subprocess.Popen(
                [sys.executable, "-m", "retrain.local.jobs", "--job-dir", str(job_dir)],
                cwd=str(job_dir),
                stdin=subprocess.DEVNULL,
                stdout=runner_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own session: the job survives the host being stopped
            )
        # runner.json last: its presence means "launched" (a crash before it lets a retry launch again).
        write_json_atomic(
            job_dir / "runner.json", {"pid": runner.pid, "start_ticks": process_start_ticks(runner.pid)}
        )

    @staticmethod
    def _adopt_runner(job_dir: Path) -> bool:
        """Whether a runner already holds the job: started by a submit whose process died after starting it
        and before recording it in runner.json (the submit is then retried, e.g. by the activity's replay
        after the host was killed). Its job stays untouched (code, inputs, spec, status); runner.json is
        written from the pid it recorded, so the job's status reads see it."""
        if not jobs.runner_holds_job(job_dir):
            return False
        status = read_json(jobs.status_path(job_dir)) if jobs.status_path(job_dir).is_file() else {}
        if status.get("runner_pid") and not (job_dir / "runner.json").is_file():
            runner = {"pid": status["runner_pid"], "start_ticks": status.get("runner_start")}
            write_json_atomic(job_dir / "runner.json", runner)
        return True

    def _data_csv(self, asset: DataAsset) -> Path:
        """The registered CSV of a data asset (its registry copy, else the path its URI names)."""
        data_csv = self.state_dir / "data" / asset.name / asset.version / "data.csv"
        if not data_csv.is_file():
            data_csv = Path(asset.uri)
        if not data_csv.is_file():
            raise PlatformError(
                f"data asset {asset.name}:{asset.version} not found; register it before training"
            )
        return data_csv

    @staticmethod
    def _job_code(trainer: Trainer, job_dir: Path) -> Path:
        """The job's code: the trainer folder with the kit copied in, under `<job>/code/` (a copy left by
        a submit that crashed before launching is replaced)."""
        parent = job_dir / "code"
        shutil.rmtree(parent, ignore_errors=True)
        try:
            return assemble_job_code(trainer.folder_path(REPO_ROOT), parent)
        except JobCodeError as exc:
            raise PlatformError(str(exc)) from exc

    def _env(self, run_id: str, experiment_name: str) -> dict[str, str]:
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_RUN_ID": run_id,
            "MLFLOW_EXPERIMENT_NAME": experiment_name,
            "PYTHONUNBUFFERED": "1",
        }

    def _find_or_create_run(self, experiment_id: str, job_name: str, tags: dict[str, str]) -> str:
        existing = self.client.search_runs(
            [experiment_id], filter_string=f"tags.job_name = '{job_name}'", max_results=1
        )
        if existing:
            return str(existing[0].info.run_id)
        run = self.client.create_run(experiment_id, run_name=job_name, tags=tags)
        return str(run.info.run_id)

    def _spec(self, job_name: str) -> dict[str, Any]:
        path = self._job_dir(job_name) / "job.json"
        if not path.is_file():
            raise PlatformError(f"no training job named {job_name!r}; submit it first")
        return read_json(path)

    def get_job(self, job_name: str) -> JobStatus:
        job_dir = self._job_dir(job_name)
        self._spec(job_name)
        # job.json is written just before the first status; a runner that died before writing it is
        # still a dead runner (below).
        has_status = jobs.status_path(job_dir).is_file()
        status = read_json(jobs.status_path(job_dir)) if has_status else {"status": "Queued"}
        if status["status"] in JOB_ENDED_STATUSES:
            return JobStatus(job_name=job_name, status=status["status"], error=status.get("error"))
        runner_file = job_dir / "runner.json"
        if not runner_file.is_file():  # being submitted right now (or the submit crashed and will be retried)
            return JobStatus(job_name=job_name, status=status["status"], error=status.get("error"))
        runner = read_json(runner_file)
        alive = process_alive(runner.get("pid"), runner.get("start_ticks"))
        age = jobs.heartbeat_age(job_dir)
        if not alive or (age is not None and age > jobs.HEARTBEAT_STALE_S):
            # Re-read: the runner may have finished between the two reads.
            if jobs.status_path(job_dir).is_file():
                status = read_json(jobs.status_path(job_dir))
            if status["status"] not in JOB_ENDED_STATUSES:
                why = "is gone" if not alive else f"has not written a heartbeat for {age:.0f} s"
                reason = (
                    f"the job runner {runner.get('pid')} {why}: it stopped without recording an outcome "
                    f"(last status {status['status']}); see {job_dir / 'std_log.txt'} and submit a new cycle"
                )
                return JobStatus(job_name=job_name, status="Failed", error=reason)
        return JobStatus(job_name=job_name, status=status["status"], error=status.get("error"))

    def cancel_job(self, job_name: str) -> JobStatus | None:
        """Stop a running job: its runner's process group (the runner and the trainer it started, both in
        the session `submit_training` created) is stopped, the job recorded Canceled and its MLflow run
        KILLED. A job that has ended (or whose runner died: Failed) keeps its status; None when no job of
        that name was submitted."""
        job_dir = self._job_dir(job_name)
        if not (job_dir / "job.json").is_file():
            return None
        with self._lock(f"job-{job_name}"):  # never between a submit's launch and its runner.json
            current = self.get_job(job_name)
            if current.terminal:
                return current
            runner_file = job_dir / "runner.json"
            runner = read_json(runner_file) if runner_file.is_file() else {}
            # Recorded first: a cancel that is itself interrupted still leaves a trace of why the job stops.
            jobs.update_status(job_dir, "CancelRequested")
            stop_whole_process_group(runner.get("pid"), runner.get("start_ticks"))
            # The runner may have recorded its outcome just before it was stopped: that outcome stands.
            recorded = read_json(jobs.status_path(job_dir)).get("status")
            if recorded in JOB_ENDED_STATUSES:
                return self.get_job(job_name)
            jobs.update_status(
                job_dir,
                "Canceled",
                error=f"job {job_name} was canceled on request (its runner's process group was stopped)",
                finished=jobs.utc_now(),
            )
        self._mark_run_killed(job_name)
        return self.get_job(job_name)

    def _mark_run_killed(self, job_name: str) -> None:
        """End a canceled job's MLflow run as KILLED (MLflow's word for it), so the UI shows the truth."""
        try:
            run_id = self.job_run_id(job_name)
            if self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_terminated(run_id, status="KILLED")
        except Exception as exc:  # noqa: BLE001 - best effort; the job status already says Canceled
            log.warning("could not mark the MLflow run of job %s killed: %s", job_name, exc)

    def get_job_metrics(self, job_name: str) -> dict[str, float]:
        """The run's MLflow metrics, completed by the numeric values of the job's metrics.json."""
        spec = self._spec(job_name)
        metrics: dict[str, float] = {}
        metrics_file = self._job_dir(job_name) / "outputs" / "metrics.json"
        if metrics_file.is_file():
            for key, value in json.loads(metrics_file.read_text()).items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    metrics[key] = float(value)
        metrics.update({k: float(v) for k, v in self.client.get_run(spec["run_id"]).data.metrics.items()})
        if not metrics:
            raise PlatformError(f"job {job_name} has no metrics (status {self.get_job(job_name).status})")
        return metrics

    def get_job_test_errors(self, job_name: str) -> dict[str, Any] | None:
        """The job's `outputs/test_errors.json` (written by the trainer), or None when it wrote none."""
        self._spec(job_name)  # an unknown job is an error, not "no test errors"
        path = self._job_dir(job_name) / "outputs" / "test_errors.json"
        if not path.is_file():
            return None
        try:
            payload = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PlatformError(
                f"{path} is not valid JSON ({exc}); the trainer writes it atomically"
            ) from exc
        return payload if isinstance(payload, dict) else None

    def job_run_id(self, job_name: str) -> str:
        return str(self._spec(job_name)["run_id"])

    # -- batch training jobs (ports.TrainsBatches) ------------------------------------------------

    def submit_batch_training(self, request: BatchTrainingRequest) -> str:
        """One detached runner for the whole batch, running the kit's batch runner from the job's code
        over `<job>/inputs/` (batch.json and each ticker's CSV, hard-linked from its data asset; each
        champion's MLflow model folder by path). Same life as a single job: Queued (waiting for one of
        the `RETRAIN_LOCAL_BATCH_JOBS` slots), Running, then Completed when at least one ticker trained,
        Failed when none did (the summary's reasons) or the batch was unusable, Canceled on request; the
        job's Event Grid event wakes the orchestration named in its tags. A second submit is a no-op."""
        job_dir = self._job_dir(request.job_name)
        try:
            trainer = get_trainer(request.trainer)
            flags = param_args(request.hyperparameters)
        except TrainerError as exc:
            raise PlatformError(str(exc)) from exc
        entries = self._batch_entries(request)
        slots = self.batch_slots()

        with self._lock(f"job-{request.job_name}"):
            if (job_dir / "runner.json").is_file() or self._adopt_runner(job_dir):
                return request.job_name  # submitted before: a no-op, as the port promises
            job_dir.mkdir(parents=True, exist_ok=True)
            code = self._job_code(trainer, job_dir)
            inputs = job_dir / "inputs"
            shutil.rmtree(inputs, ignore_errors=True)  # a submit that crashed before launching
            inputs.mkdir()
            manifest: list[dict[str, Any]] = []
            for ticker, asset, data_csv, champion in entries:
                _link_or_copy(data_csv, inputs / f"{ticker}.csv")
                item: dict[str, Any] = {
                    "ticker": ticker,
                    "data": f"{ticker}.csv",
                    "data_asset": f"{asset.name}:{asset.version}",  # lineage; the runner ignores it
                }
                if champion is not None:
                    item["champion_model"] = str(self._champion_model_dir(champion, inputs, ticker))
                    item["champion"] = f"{champion.name}:{champion.version}"
                manifest.append(item)
            write_json_atomic(inputs / "batch.json", {"tickers": manifest})
            tags = {
                TAG_INSTANCE_ID: request.instance_id,
                TAG_CODE_VERSION: request.code_version,
                TAG_JOB_NAME: request.job_name,
                TAG_TRAINER: trainer.name,
                TAG_BATCH_TICKERS: _short_join([e[0] for e in entries]),
            }
            experiment_id = self._experiment_id(request.experiment_name)
            run_id = self._find_or_create_run(experiment_id, request.job_name, tags)
            outputs = job_dir / "outputs"
            command = [
                sys.executable,
                str(code / BATCH_RUNNER),
                "--inputs",
                str(inputs),
                "--output",
                str(outputs),
                "--entry",
                trainer.entry_script,
                *flags,
            ]
            spec = {
                "job_name": request.job_name,
                "kind": "batch",
                "tickers": [e[0] for e in entries],
                "experiment_name": request.experiment_name,
                "experiment_id": experiment_id,
                "run_id": run_id,
                "tracking_uri": self.tracking_uri,
                "state_dir": str(self.state_dir),
                "tags": tags,
                "command": command,
                "cwd": str(job_dir),
                "env": self._env(run_id, request.experiment_name),
                "host_url": self.host_url or os.environ.get(jobs.HOST_URL_ENV),
                "summary": str(outputs / BATCH_SUMMARY),
                "slots": slots,
                "submitted": jobs.utc_now(),
            }
            self._launch(job_dir, spec)
        return request.job_name

    @staticmethod
    def batch_slots(environ: Any = None) -> int:
        """How many batch jobs may train at once (`RETRAIN_LOCAL_BATCH_JOBS`; 0: one per CPU)."""
        try:
            slots = settings.get_int(BATCH_SLOTS_SETTING, environ)
        except settings.SettingsError as exc:
            raise PlatformError(f"{exc}; set it to a whole number >= 0 (0: one per CPU)") from None
        if slots < 0:
            raise PlatformError(
                f"{BATCH_SLOTS_SETTING}={slots}; set it to a whole number >= 0 (0: one per CPU)"
            )
        return slots or (os.cpu_count() or 1)

    def _batch_entries(
        self, request: BatchTrainingRequest
    ) -> list[tuple[str, DataAsset, Path, ModelRef | None]]:
        """(ticker, data asset, its CSV, champion) per entry, checked before anything is written."""
        if not isinstance(request.entries, list) or not request.entries:
            raise PlatformError(
                f"batch job {request.job_name} has no entries; send one "
                '{"ticker", "data": DataAsset dict, "champion": ModelRef dict | null} per ticker'
            )
        checked: list[tuple[str, DataAsset, Path, ModelRef | None]] = []
        seen: set[str] = set()
        for i, entry in enumerate(request.entries):
            ticker = entry.get("ticker") if isinstance(entry, dict) else None
            if not isinstance(ticker, str) or not _BATCH_TICKER.match(ticker):
                raise PlatformError(
                    f"batch entry {i}: ticker {ticker!r} is not a canonical symbol; send an upper-case "
                    "ticker such as MSFT, BRK.B or ^GSPC"
                )
            if ticker in seen:
                raise PlatformError(f"batch entry {i}: {ticker} appears twice; list each ticker once")
            seen.add(ticker)
            if not isinstance(entry.get("data"), dict):
                raise PlatformError(f'batch entry {i} ({ticker}) needs "data": a DataAsset dict')
            asset = DataAsset.from_dict(entry["data"])
            champion = ModelRef.from_dict(entry["champion"]) if entry.get("champion") else None
            checked.append((ticker, asset, self._data_csv(asset), champion))
        return checked

    def _champion_model_dir(self, champion: ModelRef, inputs: Path, ticker: str) -> Path:
        """The champion's MLflow model folder: the registry's own artifact folder when it is on this file
        system (read, never written, by the trainer), else a download into the inputs."""
        import_mlflow()
        from mlflow.exceptions import MlflowException

        try:
            version = self.client.get_model_version(champion.name, champion.version)
            artifact_uri = self.client.get_run(version.run_id).info.artifact_uri
        except MlflowException as exc:
            raise PlatformError(
                f"champion {champion.name}:{champion.version} of {ticker} is not registered"
            ) from exc
        local = local_artifact_dir(str(artifact_uri))
        if local is not None and (local / "model" / "MLmodel").is_file():
            return local / "model"
        dest = inputs / "champions" / ticker
        self._fetch_model(champion, dest)
        return dest / "model"

    def _batch_output(self, job_name: str) -> Path:
        spec = self._spec(job_name)
        if spec.get("kind") != "batch":
            raise PlatformError(
                f"job {job_name} is a single-ticker job, not a batch; read it with get_job_metrics"
            )
        return self._job_dir(job_name) / "outputs"

    def get_batch_summary(self, job_name: str) -> dict[str, Any]:
        path = self._batch_output(job_name) / BATCH_SUMMARY
        if not path.is_file():
            status = self.get_job(job_name)
            raise PlatformError(
                f"batch job {job_name} has no {BATCH_SUMMARY} (it is {status.status}"
                + (f": {status.error}" if status.error else "")
                + "); the batch runner writes it when the batch ends"
            )
        return _read_json_object(path)

    def _batch_ticker_dir(self, job_name: str, ticker: str) -> Path:
        """A trained ticker's output folder; an error naming why when the ticker did not train."""
        entry = (self.get_batch_summary(job_name).get("tickers") or {}).get(ticker)
        if entry is None:
            raise PlatformError(f"ticker {ticker!r} is not in batch job {job_name}")
        if entry.get("status") != "ok":
            raise PlatformError(f"{ticker} failed in batch job {job_name}: {entry.get('error')}")
        return self._job_dir(job_name) / "outputs" / ticker

    def get_batch_metrics(self, job_name: str, ticker: str) -> dict[str, float]:
        """The numeric values of the ticker's metrics.json (what the trainer measured on its test days)."""
        values = _read_json_object(self._batch_ticker_dir(job_name, ticker) / "metrics.json")
        return {
            k: float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }

    def get_batch_test_errors(self, job_name: str, ticker: str) -> dict[str, Any] | None:
        path = self._batch_ticker_dir(job_name, ticker) / "test_errors.json"
        return _read_json_object(path) if path.is_file() else None

    # -- model registry ---------------------------------------------------------------------------

    def register_model(self, name: str, job_name: str, tags: dict[str, str]) -> ModelRef:
        _safe("model name", name)
        job = self.get_job(job_name)
        if not job.succeeded:
            raise PlatformError(
                f"job {job_name} is {job.status}, not Completed; only a completed job's model registers"
            )
        run_id = self.job_run_id(job_name)
        # The fit ends the trainer set on its run travel onto the version, as the Azure adapter does.
        run_tags = self.client.get_run(run_id).data.tags
        fit_ends = {key: str(run_tags[key]) for key in FIT_END_TAGS if run_tags.get(key)}
        version_tags = {**{str(k): str(v) for k, v in tags.items()}, **fit_ends, TAG_JOB_NAME: job_name}
        with self._lock(f"model-{name}"):
            existing = self._version_for_job(name, job_name)
            if existing is not None:
                return existing
            import_mlflow()
            from mlflow.exceptions import MlflowException

            try:
                self.client.create_registered_model(name)
            except MlflowException as exc:
                if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                    raise
            version = self.client.create_model_version(
                name, source=f"runs:/{run_id}/model", run_id=run_id, tags=version_tags
            )
        return ModelRef(name=name, version=str(version.version), tags=dict(version.tags or version_tags))

    def register_batch_model(self, name: str, job_name: str, ticker: str, tags: dict[str, str]) -> ModelRef:
        """Register the model the batch job trained for `ticker` (its own MLflow run's `model`); the same
        job and ticker again returns the existing version."""
        _safe("model name", name)
        job = self.get_job(job_name)
        if not job.succeeded:
            raise PlatformError(
                f"batch job {job_name} is {job.status}, not Completed; only a completed job's models register"
            )
        run = _read_json_object(self._batch_ticker_dir(job_name, ticker) / "run.json")
        run_id = str(run.get("run_id") or "")
        if not run_id:
            raise PlatformError(f"{ticker}'s run.json of batch job {job_name} names no run_id")
        fit_ends = {key: str(run[key]) for key in FIT_END_TAGS if run.get(key)}
        version_tags = {
            **{str(k): str(v) for k, v in tags.items()},
            **fit_ends,
            TAG_JOB_NAME: job_name,
            TAG_TICKER: ticker,
        }
        with self._lock(f"model-{name}"):
            existing = self._version_for_job(name, job_name, ticker)
            if existing is not None:
                return existing
            import_mlflow()
            from mlflow.exceptions import MlflowException

            try:
                self.client.create_registered_model(name)
            except MlflowException as exc:
                if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                    raise
            version = self.client.create_model_version(
                name, source=f"runs:/{run_id}/model", run_id=run_id, tags=version_tags
            )
        return ModelRef(name=name, version=str(version.version), tags=dict(version.tags or version_tags))

    def _version_for_job(self, name: str, job_name: str, ticker: str | None = None) -> ModelRef | None:
        for version in self.client.search_model_versions(f"name = '{name}'"):
            found = version.tags or {}
            if found.get(TAG_JOB_NAME) == job_name and (ticker is None or found.get(TAG_TICKER) == ticker):
                return ModelRef(name=name, version=str(version.version), tags=dict(version.tags))
        return None

    def get_champion(self, name: str) -> ModelRef | None:
        import_mlflow()
        from mlflow.exceptions import MlflowException

        try:
            version = self.client.get_model_version_by_alias(_safe("model name", name), CHAMPION_ALIAS)
        except MlflowException:
            return None
        return ModelRef(name=name, version=str(version.version), tags=dict(version.tags or {}))

    def set_champion(self, model: ModelRef) -> None:
        import_mlflow()
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_model_version(model.name, model.version)
        except MlflowException as exc:
            raise PlatformError(
                f"model {model.name} version {model.version} is not registered; register it first"
            ) from exc
        self.client.set_registered_model_alias(model.name, CHAMPION_ALIAS, model.version)

    def _fetch_model(self, model: ModelRef, dest: Path) -> None:
        """Download a registered model version's files to dest (the MLflow model at dest/model)."""
        import_mlflow()
        from mlflow.exceptions import MlflowException

        try:
            version = self.client.get_model_version(model.name, model.version)
        except MlflowException as exc:
            raise PlatformError(f"model {model.name} version {model.version} is not registered") from exc
        dest.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault(
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"
        )  # no progress bars in host logs
        self.client.download_artifacts(version.run_id, "model", str(dest))
        if not (dest / "model" / "MLmodel").is_file():
            raise PlatformError(
                f"model {model.name}:{model.version} (run {version.run_id}) has no MLflow model under 'model'"
            )

    @contextlib.contextmanager
    def _model_source(self, model: ModelRef) -> Iterator[tuple[Path, dict[str, str]]]:
        """A registered model version's MLflow model folder and its registry tags, for a bundle: the
        artifact store's own folder when it is on this file system (the bundle hard-links its files),
        else a temporary download."""
        import_mlflow()
        from mlflow.exceptions import MlflowException

        try:
            version = self.client.get_model_version(model.name, model.version)
            artifact_uri = self.client.get_run(version.run_id).info.artifact_uri
        except MlflowException as exc:
            raise PlatformError(
                f"model {model.name} version {model.version} is not registered; register it before "
                "putting it in a bundle"
            ) from exc
        tags = {str(k): str(v) for k, v in (version.tags or {}).items()}
        local = local_artifact_dir(str(artifact_uri))
        if local is not None:  # build_bundle checks it holds an MLflow model
            yield local / "model", tags
            return
        with temporary_download(
            self.state_dir / "bundles", lambda dest: self._fetch_model(model, dest)
        ) as dest:
            yield dest / "model", tags

    # -- model bundles (ports.MLPlatform; delegated to LocalBundles) ---------------------------

    def register_bundle(
        self,
        endpoint: str,
        version: str,
        parent: BundleRef | None,
        changes: dict[str, ModelRef],
        orchestration_ids: list[str],
        removed: list[str] | None = None,
    ) -> BundleRef:
        return self.bundles.register_bundle(endpoint, version, parent, changes, orchestration_ids, removed)

    def get_bundle(self, endpoint: str, version: str) -> BundleRef | None:
        return self.bundles.get_bundle(endpoint, version)

    # -- monitoring time series -------------------------------------------------------------------

    def log_monitor_metrics(self, ticker: str, day: str, metrics: dict[str, float]) -> None:
        self.log_monitor_days(ticker, {day: metrics})

    def log_monitor_days(self, ticker: str, days: dict[str, dict[str, float]]) -> str:
        """Append trading days' metrics to the ticker's monitoring run (see `MLPlatform.log_monitor_metrics`);
        the run id. A (metric, day) already in the run's history is skipped, so a replay adds nothing."""
        points = [monitor_metric_point(day, metrics) for day, metrics in days.items()]
        import_mlflow()
        from mlflow.entities import Metric
        from mlflow.exceptions import MlflowException

        name = monitor_experiment_name(ticker)
        try:
            with self._lock(name):
                experiment_id = self._experiment_id(name)
                found = self.client.search_runs(
                    [experiment_id], filter_string=f"tags.{MONITOR_RUN_TAG} = '{ticker}'", max_results=1
                )
                if found:
                    run_id = str(found[0].info.run_id)
                else:
                    run = self.client.create_run(
                        experiment_id, run_name=MONITOR_RUN_NAME, tags={MONITOR_RUN_TAG: ticker}
                    )
                    run_id = str(run.info.run_id)
                keys = {key for _, _, metrics in points for key in metrics}
                logged = {
                    key: {m.step for m in self.client.get_metric_history(run_id, key)} for key in sorted(keys)
                }
                new = [
                    Metric(key, value, stamp, step)
                    for step, stamp, metrics in points
                    for key, value in metrics.items()
                    if step not in logged[key]
                ]
                for start in range(0, len(new), 900):  # the SQL store takes at most 1000 metrics a batch
                    self.client.log_batch(run_id, metrics=new[start : start + 900])
                return run_id
        except MlflowException as exc:
            raise PlatformError(f"could not log monitor metrics of {ticker} to MLflow: {exc}") from exc

    # -- online endpoint (delegated to LocalEndpoints) --------------------------------------------

    def begin_create_endpoint(self, name: str) -> EndpointState:
        return self.endpoints.begin_create_endpoint(name)

    def get_endpoint(self, name: str) -> EndpointState:
        return self.endpoints.get_endpoint(name)

    def begin_deployment(self, endpoint: str, slot: str, model: ModelRef) -> DeploymentState:
        return self.endpoints.begin_deployment(endpoint, slot, model)

    def get_deployment(self, endpoint: str, slot: str) -> DeploymentState:
        return self.endpoints.get_deployment(endpoint, slot)

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> EndpointState:
        return self.endpoints.set_traffic(endpoint, traffic)

    def invoke(self, endpoint: str, payload: dict[str, Any], slot: str | None = None) -> dict[str, Any]:
        return self.endpoints.invoke(endpoint, payload, slot)

    def begin_delete_deployment(self, endpoint: str, slot: str) -> DeploymentState:
        return self.endpoints.begin_delete_deployment(endpoint, slot)

    # -- lifecycle (CLI `serve`, tests) ------------------------------------------------------------

    def restore(self) -> list[EndpointState]:
        """Bring the endpoints' slots and scoring URLs back up from the state dir."""
        return self.endpoints.restore()

    def broken_endpoints(self) -> dict[str, str]:
        """The endpoints the last `restore` could not bring back, with why."""
        return dict(self.endpoints.broken)

    def detach_routers(self) -> None:
        """Serve the scoring URLs from router processes of their own, which outlive this process."""
        self.endpoints.detach_routers = True

    def wait_until_ready(self, name: str, timeout: float = 180.0) -> EndpointState:
        """Block until the endpoint's slots are live and no operation is in progress."""
        return self.endpoints.wait_until_ready(name, timeout)

    def stop_routers(self) -> None:
        """Stop serving the scoring URLs from this process; the slot processes keep running."""
        self.endpoints.stop_routers()

    def release_endpoints(self) -> None:
        """Leave the endpoints running (detached routers and slots) for the next `retrain serve`."""
        self.endpoints.release()

    def stop_all(self, everything: bool = False) -> None:
        """Stop the endpoints' routers and the slot processes this instance started or restored (by
        PID; `everything`: every recorded slot). Training jobs keep running."""
        self.endpoints.stop_all(everything=everything)


def _link_or_copy(source: Path, dest: Path) -> None:
    """A hard link when the file system allows (the data asset is immutable), else a copy."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


def _short_join(values: list[str], limit: int = 5000) -> str:
    text = ",".join(values)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object the batch runner or the trainer wrote (atomically); a clear error otherwise."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlatformError(f"{path} does not exist") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise PlatformError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(payload, dict):
        raise PlatformError(f"{path} holds {type(payload).__name__}, not a JSON object")
    return payload
