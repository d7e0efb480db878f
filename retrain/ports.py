"""The `MLPlatform` port and the value types that cross it.

The orchestrator and the activities only ever talk to this protocol. Two adapters implement it:
`retrain.azureml` (Azure ML through `azure-ai-ml`) and `retrain.local` (the embedded platform); see
docs/architecture.md. The port's words (tag names, status sets) are in `retrain.vocabulary`.

Every value type is a frozen dataclass that round-trips through plain JSON (`to_dict` /
`from_dict`), because activity inputs and outputs travel through the Durable Functions history.
Long Azure operations (a deployment takes many minutes) are split into a `begin_*` call and a
status call, so no activity blocks for minutes; the orchestrator waits with durable timers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol, TypeVar, runtime_checkable

# The port's words (tag names, job and provisioning status sets) live in retrain/vocabulary.py.
from retrain.vocabulary import (
    JOB_ENDED_STATUSES,  # noqa: F401 - re-exported: the port's words
    JOB_STATUSES,  # noqa: F401 - re-exported: the port's words
    JOB_TERMINAL_STATUSES,
    PROVISIONING_IN_PROGRESS,  # noqa: F401 - re-exported: the port's words
    PROVISIONING_STATES,  # noqa: F401 - re-exported: the port's words
    PROVISIONING_TERMINAL,
    SLOTS,
    TAG_BUNDLE,
)

T = TypeVar("T", bound="_Value")


class PlatformError(RuntimeError):
    """A platform call failed in a way that retrying will not fix (bad input, missing entity)."""


class TransientPlatformError(PlatformError):
    """A platform call failed in a way that may succeed when retried (network, throttling, 5xx)."""


class EndpointBusyError(TransientPlatformError):
    """Another operation on the endpoint is still in progress (Azure answers 409 Conflict): wait until the
    endpoint is no longer Updating, then try again; a quick retry only meets the same refusal."""


class ScoringUnavailableError(TransientPlatformError):
    """The scoring URL answered 503 (or 429) with `Retry-After`: no deployment can answer right now (it is
    starting or restarting, or the endpoint is throttled); the same request may succeed after
    `retry_after_s` seconds."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delay-seconds or an HTTP date), None when absent or
    unreadable."""
    import email.utils
    import time

    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class _Value:
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class DataAsset(_Value):
    """An immutable, versioned data asset (a CSV snapshot with Date and OHLCV columns)."""

    name: str  # e.g. "msft-daily"
    version: str  # derived from the content: the same data gives the same version
    uri: str  # a local path, or an azureml:// URI
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelRef(_Value):
    name: str
    version: str
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingRequest(_Value):
    job_name: str  # computed by the caller from the instance id: submitting twice is a no-op
    experiment_name: str  # one per ticker
    ticker: str
    data: dict[str, Any]  # DataAsset.to_dict()
    instance_id: str  # orchestration instance id; travels in the job's tags
    code_version: str
    champion: dict[str, Any] | None = None  # ModelRef.to_dict() of the current champion, if any
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # each becomes `--param key=value`
    trainer: str = "lstm"  # a name in retrain.trainers.TRAINERS (its folder is the job's code)

    @property
    def data_asset(self) -> DataAsset:
        return DataAsset.from_dict(self.data)

    @property
    def champion_model(self) -> ModelRef | None:
        return ModelRef.from_dict(self.champion) if self.champion else None


@dataclass(frozen=True)
class BatchTrainingRequest(_Value):
    """One training job for a batch of tickers (a fleet cycle's batch, docs/trainer-contract.md "Batches")."""

    job_name: str  # computed by the caller from the batch's instance id: submitting twice is a no-op
    experiment_name: str
    instance_id: str  # the batch orchestration's id; travels in the job's tags (its Event Grid event)
    code_version: str
    # One entry per ticker, in order: {"ticker", "data": DataAsset dict, "champion": ModelRef dict | None}.
    entries: list[dict[str, Any]] = field(default_factory=list)
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # each becomes `--param key=value`
    trainer: str = (
        "ridge"  # a name in retrain.trainers.TRAINERS (its folder, with the kit, is the job's code)
    )

    @property
    def tickers(self) -> list[str]:
        return [str(e["ticker"]) for e in self.entries]


@dataclass(frozen=True)
class JobStatus(_Value):
    job_name: str
    status: str  # one of JOB_STATUSES
    error: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in JOB_TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "Completed"


@dataclass(frozen=True)
class DeploymentState(_Value):
    endpoint: str
    slot: str  # "blue" or "green"
    state: str  # Creating, Updating, Succeeded, Failed, Deleting, NotFound
    model: dict[str, Any] | None = None  # ModelRef.to_dict()
    error: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state in PROVISIONING_TERMINAL


@dataclass(frozen=True)
class EndpointState(_Value):
    name: str
    state: str  # Creating, Succeeded, Failed, NotFound
    scoring_uri: str | None = None
    traffic: dict[str, int] = field(default_factory=dict)  # slot -> percent, sums to 100 or is empty
    deployments: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # slot -> ModelRef dict

    def serving_slot(self) -> str | None:
        """The slot with the most traffic, or None when nothing serves yet."""
        live = {s: p for s, p in self.traffic.items() if p > 0}
        return max(live, key=lambda s: live[s]) if live else None

    def idle_slot(self) -> str:
        """The slot a new model goes to: the one that is not serving."""
        serving = self.serving_slot()
        return SLOTS[1] if serving == SLOTS[0] else SLOTS[0]


@dataclass(frozen=True)
class BundleRef(_Value):
    """A model bundle (docs/bundles.md): the immutable, versioned artefact one deployment serves for many
    tickers. Version k+1 is version k with the changed tickers' models replaced. `tickers` maps each ticker
    to {"model_name", "model_version", "family", "fitted_data_end"}; a deployment serves `as_model()`."""

    name: str  # naming.bundle_name(endpoint)
    version: str  # "1", "2", ...: computed by the caller (parent + 1), so a replayed register is a no-op
    endpoint: str
    tickers: dict[str, dict[str, Any]] = field(default_factory=dict)
    parent_version: str | None = None
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    orchestration_ids: list[str] = field(default_factory=list)

    def as_model(self) -> ModelRef:
        """What `begin_deployment` takes for this bundle (tagged, so an adapter knows it is one)."""
        return ModelRef(self.name, self.version, {TAG_BUNDLE: "true"})

    def model_of(self, ticker: str) -> ModelRef | None:
        """The model that serves `ticker` in this bundle, or None when the bundle does not hold it."""
        entry = self.tickers.get(ticker)
        return ModelRef(entry["model_name"], str(entry["model_version"])) if entry else None


def is_bundle(model: ModelRef | dict[str, Any] | None) -> bool:
    """Whether a deployment's model (a ModelRef or its dict) is a bundle."""
    if model is None:
        return False
    tags = model.tags if isinstance(model, ModelRef) else (model.get("tags") or {})
    return tags.get(TAG_BUNDLE) == "true"


@runtime_checkable
class MLPlatform(Protocol):
    """What the retraining workflow needs from an ML platform. Every call is idempotent where the
    workflow may repeat it (an activity can run again after a crash)."""

    # Data assets: immutable versions; registering the same (name, version) twice returns the first.
    def register_data(self, name: str, version: str, csv_path: str, tags: dict[str, str]) -> DataAsset: ...

    # Training jobs. `submit_training` returns the job name; a second submit of the same name is a no-op.
    def submit_training(self, request: TrainingRequest) -> str: ...

    def get_job(self, job_name: str) -> JobStatus: ...

    # Cancel a job that is still running (Azure ML: `begin_cancel`; locally: stop the runner's process
    # group). Returns the job's status after the request (Canceled, or CancelRequested while Azure ML stops
    # it); a job that already ended keeps its status (a no-op); None when no job of that name exists.
    def cancel_job(self, job_name: str) -> JobStatus | None: ...

    def get_job_metrics(self, job_name: str) -> dict[str, float]: ...

    # The job's per-day test forecasts (`test_errors.json`: dates, actual, model, naive, champion), for the
    # gate's significance test; None when the trainer did not write them.
    def get_job_test_errors(self, job_name: str) -> dict[str, Any] | None: ...

    # Model registry. Registering the same job's model twice returns the existing version.
    def register_model(self, name: str, job_name: str, tags: dict[str, str]) -> ModelRef: ...

    def get_champion(self, name: str) -> ModelRef | None: ...

    def set_champion(self, model: ModelRef) -> None: ...

    # Online endpoint with blue/green slots. A deployment serves one model, or a bundle (`BundleRef.as_model()`).
    def begin_create_endpoint(self, name: str) -> EndpointState: ...

    def get_endpoint(self, name: str) -> EndpointState: ...

    def begin_deployment(self, endpoint: str, slot: str, model: ModelRef) -> DeploymentState: ...

    def get_deployment(self, endpoint: str, slot: str) -> DeploymentState: ...

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> EndpointState: ...

    def invoke(self, endpoint: str, payload: dict[str, Any], slot: str | None = None) -> dict[str, Any]: ...

    def begin_delete_deployment(self, endpoint: str, slot: str) -> DeploymentState: ...

    # Monitoring time series: one trading day's metrics appended to the ticker's MLflow experiment
    # `monitor-<ticker slug>` (one run tagged with the ticker), step = the day's ordinal, timestamp = the day,
    # so the MLflow UI plots them over time. Idempotent: a (metric, day) already logged is not logged again.
    def log_monitor_metrics(self, ticker: str, day: str, metrics: dict[str, float]) -> None: ...

    # Model bundles (docs/bundles.md). `register_bundle` builds version `version` of the endpoint's bundle:
    # `parent` (None: an empty one) with each ticker in `changes` now served by that registered model and
    # the tickers in `removed` left out; family and fitted-data end come from each model's tags. Registering
    # an existing (endpoint, version) again with the same content returns it (a replayed activity); with
    # other content it is a PlatformError (versions are immutable). `get_bundle` is None when absent.
    def register_bundle(
        self,
        endpoint: str,
        version: str,
        parent: BundleRef | None,
        changes: dict[str, ModelRef],
        orchestration_ids: list[str],
        removed: list[str] | None = None,
    ) -> BundleRef: ...

    def get_bundle(self, endpoint: str, version: str) -> BundleRef | None: ...


# ---- monitoring time series (shared by the adapters) -------------------------------------------------
MONITOR_RUN_NAME = "monitor"
MONITOR_RUN_TAG = "retrain_monitor_ticker"  # the run's tag whose value is the ticker: how it is found again


def monitor_experiment_name(ticker: str) -> str:
    """The MLflow experiment of a ticker's monitoring time series (the ticker is checked: it also goes into
    the run search's filter)."""
    import re

    from retrain import naming

    if not re.fullmatch(r"[A-Z0-9.^=-]{1,15}", str(ticker)):
        raise PlatformError(f"ticker {ticker!r}: send an upper-case symbol such as MSFT or BRK-B")
    return f"monitor-{naming.ticker_slug(ticker)}"


def monitor_metric_point(day: str, metrics: dict[str, float]) -> tuple[int, int, dict[str, float]]:
    """(step, timestamp in ms, metrics) of one trading day: step = the day's ordinal, timestamp = its
    midnight UTC. Non-finite values are left out (MLflow's UI cannot plot them); a bad day or metric name
    is a PlatformError that says what to send."""
    import datetime as dt
    import math
    import re

    try:
        date = dt.date.fromisoformat(str(day))
    except ValueError:
        raise PlatformError(f"monitor day {day!r} is not a date: send YYYY-MM-DD") from None
    kept: dict[str, float] = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_.\- /]{1,250}", key):
            raise PlatformError(
                f"monitor metric name {key!r}: send letters, digits, '_', '-', '.', ' ' or '/' (at most 250)"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PlatformError(f"monitor metric {key}={value!r} is not a number")
        if math.isfinite(float(value)):
            kept[key] = float(value)
    stamp = int(dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC).timestamp() * 1000)
    return date.toordinal(), stamp, kept


@runtime_checkable
class TrainsBatches(Protocol):
    """Batch training jobs (fleet cycles, docs/architecture.md): one job trains many tickers, each
    ticker's outputs under the job's outputs (`<ticker>/`: model, metrics.json, test_errors.json) and a
    `batch_summary.json` saying which trained and why the others failed. Both adapters implement it;
    checked with `isinstance`, so a platform without it fails a fleet cycle with a clear reason."""

    # A second submit of the same job name is a no-op (a replayed activity).
    def submit_batch_training(self, request: BatchTrainingRequest) -> str: ...

    # The job's batch_summary.json (trainer_kit/batch.py): {"tickers": {T: {"status": "ok", "metrics",
    # "seconds"} | {"status": "failed", "error"}}, "ok": n, "failed": n}. A PlatformError when absent.
    def get_batch_summary(self, job_name: str) -> dict[str, Any]: ...

    # One ticker's metrics and test_errors.json (None when its trainer wrote none) of a batch job.
    def get_batch_metrics(self, job_name: str, ticker: str) -> dict[str, float]: ...

    def get_batch_test_errors(self, job_name: str, ticker: str) -> dict[str, Any] | None: ...

    # Register one ticker's model of a batch job; registering it again returns the existing version.
    def register_batch_model(
        self, name: str, job_name: str, ticker: str, tags: dict[str, str]
    ) -> ModelRef: ...


@runtime_checkable
class HostsEndpoints(Protocol):
    """An optional capability: a platform whose endpoints run as processes of this machine (the local
    adapter). The CLI brings them back when a host starts, detaches or releases them for `retrain serve`,
    and stops them when `retrain run` ends; a platform without it (Azure ML, whose endpoints live in
    Azure) has nothing to restore or stop. Checked with `isinstance`, never by probing attributes."""

    def restore(self) -> list[EndpointState]: ...

    def broken_endpoints(self) -> dict[str, str]: ...

    def wait_until_ready(self, name: str, timeout: float = 180.0) -> EndpointState: ...

    def detach_routers(self) -> None: ...

    def release_endpoints(self) -> None: ...

    def stop_all(self, everything: bool = False) -> None: ...


@runtime_checkable
class PreparesInvoke(Protocol):
    """An optional capability: a platform that looks something up before it can score (Azure: the
    endpoint's scoring URI and key, once per endpoint). The smoke test calls it before it starts its
    latency timer, so the bound measures scoring only."""

    def prepare_invoke(self, endpoint: str) -> Any: ...
