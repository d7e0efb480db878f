"""An in-memory `MLPlatform` for orchestration tests (ports and adapters: it stands in for the platform,
not for the Functions host, the SDK or the Event Grid trigger, which all run for real).

Jobs "finish" on a background thread after `job_seconds` and, like the local platform, deliver Azure
ML's Event Grid event to the host's real webhook; scripted knobs make the paths under test happen:
lost events, failed jobs, duplicate events, metrics that fail the gate, a slot that answers garbage,
permanent and transient failures, a busy endpoint, a deployment that fails, a slot that dies, one
ticker's model in a bundle that answers NaN. Batch training jobs (ports.TrainsBatches, fleet cycles) train
every ticker of a batch in one job, a scripted ticker's fit failing alone. Bundles (ports.MLPlatform) are kept in memory and a
slot serving one answers per ticker, and batches `{"instances": [{"ticker", "close"}, ...]}` with one
answer per instance (an error in place of a ticker it does not hold), as scorer/score.py does.

As strict as Azure where the orchestrator could notice (docs/architecture.md): a traffic update is a long-running
operation (`set_traffic` answers `Updating`; it applies at the next read, or `get_endpoint` shows the
old traffic as `Updating` for `op_polls` reads first); one operation at a time per endpoint (a write
while one runs raises `EndpointBusyError`, Azure's 409); a deployment is `Creating` for a while and a
delete `Deleting` until a read finds it gone; a deployment that failed its first provisioning refuses an
update; unpinned requests while every slot has 0 % answer 404.
Selected with RETRAIN_PLATFORM=tests.integration.memory_platform:shared.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from retrain import naming
from retrain.ports import (
    BatchTrainingRequest,
    BundleRef,
    DataAsset,
    DeploymentState,
    EndpointBusyError,
    EndpointState,
    JobStatus,
    ModelRef,
    PlatformError,
    TrainingRequest,
    TransientPlatformError,
    is_bundle,
    monitor_experiment_name,
    monitor_metric_point,
)


@dataclass
class Script:
    """What the next jobs and slots do."""

    host_url: str | None = None  # where events go; None = events are lost
    system_key: str | None = None
    job_seconds: float = 0.3
    # Set: jobs run until the test sets this event (or job_seconds pass), not a guessed fixed time.
    job_release: threading.Event | None = None
    job_status: str = "Completed"
    event_copies: int = 1  # > 1: Event Grid's at-least-once delivery
    metrics: dict[str, float] = field(
        default_factory=lambda: {
            "mae": 1.0,
            "rmse": 1.3,
            "mape": 0.01,
            "naive_mae": 1.2,
            "mae_vs_naive": 0.833,
        }
    )
    champion_mae: float | None = 1.1  # reported when a champion was given
    broken_slots: set[str] = field(default_factory=set)  # slots whose model answers NaN
    broken_unpinned: bool = False  # requests through the stable URL (no slot named) answer NaN
    dead_slots: set[str] = field(default_factory=set)  # slots whose server is down: Failed, refuse requests
    failing_deployments: set[str] = field(default_factory=set)  # slots whose next deployment ends Failed
    op_polls: int = 0  # reads that still see a traffic update in progress before it applies
    busy_reads: int = 0  # > 0: the next write meets a foreign operation that lasts this many reads
    # Set: a submit announces itself (`submitting`) and waits for this event before its job exists, so a
    # test can act while a `submit_training` activity is in flight.
    submit_gate: threading.Event | None = None
    submitting: threading.Event = field(default_factory=threading.Event)
    # Set: a deployment announces itself (`deploying`) and waits for this event before it begins, so a
    # test can act while a rollout's `begin_deployment` activity is in flight.
    deploy_gate: threading.Event | None = None
    deploying: threading.Event = field(default_factory=threading.Event)
    # Models ("name:version") that answer NaN when a bundle serves them: one ticker's failing smoke test.
    broken_models: set[str] = field(default_factory=set)
    failing_fits: set[str] = field(default_factory=set)  # tickers whose fit fails in a batch job
    permanent_failures: set[str] = field(default_factory=set)  # methods that raise PlatformError
    transient_failures: dict[str, int] = field(default_factory=dict)  # method -> raises left


class MemoryPlatform:
    def __init__(self) -> None:
        self.script = Script()
        self.lock = threading.Lock()
        self.data: dict[tuple[str, str], DataAsset] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.models: dict[str, list[ModelRef]] = {}
        self.champions: dict[str, str] = {}
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.events_sent: list[tuple[str, str]] = []
        self.monitor_metrics: dict[str, dict[str, dict[str, float]]] = {}  # ticker -> day -> metrics
        self.bundles: dict[tuple[str, str], BundleRef] = {}  # (endpoint, version) -> bundle
        self.operations: list[tuple[Any, ...]] = []  # endpoint writes in order: (endpoint, kind, ...)

    def _scripted_failure(self, method: str) -> None:
        self.calls.append((method, None))
        if method in self.script.permanent_failures:
            raise PlatformError(f"{method}: scripted bad request")
        if self.script.transient_failures.get(method, 0) > 0:
            self.script.transient_failures[method] -= 1
            raise TransientPlatformError(f"{method}: scripted throttling (429)")

    def reset(self, **script: Any) -> None:
        with self.lock:
            self.__init__()  # type: ignore[misc]
            for key, value in script.items():
                setattr(self.script, key, value)

    # -- data ----------------------------------------------------------------------------------
    def register_data(self, name: str, version: str, csv_path: str, tags: dict[str, str]) -> DataAsset:
        self.calls.append(("register_data", version))
        with open(csv_path, "rb") as fh:  # the activity's staging file must exist during the call
            fh.read(1)
        return self.data.setdefault(
            (name, version), DataAsset(name, version, f"memory://{name}/{version}", tags)
        )

    # -- jobs ----------------------------------------------------------------------------------
    def submit_training(self, request: TrainingRequest) -> str:
        if self.script.submit_gate is not None:
            self.script.submitting.set()
            self.script.submit_gate.wait(60)
        with self.lock:
            self.calls.append(("submit_training", request.job_name))
            if request.job_name in self.jobs:
                return request.job_name
            job = {
                "request": request,
                "status": "Running",
                "metrics": dict(self.script.metrics),
                "status_at_end": self.script.job_status,
            }
            if request.champion and self.script.champion_mae is not None:
                job["metrics"]["champion_mae"] = self.script.champion_mae
            self.jobs[request.job_name] = job
        threading.Thread(target=self._finish, args=(request.job_name,), daemon=True).start()
        return request.job_name

    # -- batch jobs (ports.TrainsBatches) ------------------------------------------------------
    def submit_batch_training(self, request: BatchTrainingRequest) -> str:
        if self.script.submit_gate is not None:  # as submit_training: held until the test lets it go
            self.script.submitting.set()
            self.script.submit_gate.wait(60)
        with self.lock:
            self.calls.append(("submit_batch_training", request.job_name))
            if request.job_name in self.jobs:
                return request.job_name
            summary: dict[str, Any] = {}
            for entry in request.entries:
                ticker = str(entry["ticker"])
                if ticker in self.script.failing_fits:
                    summary[ticker] = {"status": "failed", "error": f"{ticker}: scripted fit failure"}
                    continue
                metrics = dict(self.script.metrics)
                if entry.get("champion") and self.script.champion_mae is not None:
                    metrics["champion_mae"] = self.script.champion_mae
                summary[ticker] = {"status": "ok", "metrics": metrics, "seconds": 0.01}
            ok = sum(r["status"] == "ok" for r in summary.values())
            self.jobs[request.job_name] = {
                "request": request,
                "status": "Running",
                "summary": {"tickers": summary, "ok": ok, "failed": len(summary) - ok},
                # As trainer_kit/batch.py: the job fails when no ticker trained.
                "status_at_end": self.script.job_status if ok else "Failed",
            }
        threading.Thread(target=self._finish, args=(request.job_name,), daemon=True).start()
        return request.job_name

    def _batch_job(self, job_name: str) -> dict[str, Any]:
        job = self.jobs.get(job_name)
        if job is None or "summary" not in job:
            raise PlatformError(f"no batch job {job_name}")
        return job

    def get_batch_summary(self, job_name: str) -> dict[str, Any]:
        self._scripted_failure("get_batch_summary")
        job = self._batch_job(job_name)
        if job["status"] == "Running":
            raise PlatformError(f"batch job {job_name} has no batch_summary.json yet")
        return json.loads(json.dumps(job["summary"]))

    def get_batch_metrics(self, job_name: str, ticker: str) -> dict[str, float]:
        result = self._batch_job(job_name)["summary"]["tickers"].get(ticker) or {}
        if result.get("status") != "ok":
            raise PlatformError(f"{ticker} has no metrics in batch job {job_name}")
        return dict(result["metrics"])

    def get_batch_test_errors(self, job_name: str, ticker: str) -> dict[str, Any] | None:
        self._scripted_failure("get_batch_test_errors")  # e.g. 403: a role not yet propagated
        self._batch_job(job_name)
        return None  # no per-day errors: the gate's fixed margins (as get_job_test_errors here)

    def register_batch_model(self, name: str, job_name: str, ticker: str, tags: dict[str, str]) -> ModelRef:
        with self.lock:
            job = self._batch_job(job_name)
            if (
                job["status"] != "Completed"
                or job["summary"]["tickers"].get(ticker, {}).get("status") != "ok"
            ):
                raise PlatformError(f"{ticker} did not train in batch job {job_name}")
            versions = self.models.setdefault(name, [])
            for model in versions:
                if model.tags.get("job_name") == job_name:  # a replayed activity: the same version
                    return model
            model = ModelRef(
                name=name,
                version=str(len(versions) + 1),
                tags={**tags, "job_name": job_name, "ticker": ticker},
            )
            versions.append(model)
            self.calls.append(("register_batch_model", (ticker, model.version)))
            return model

    def _finish(self, job_name: str) -> None:
        if self.script.job_release is not None:
            self.script.job_release.wait(self.script.job_seconds)
        else:
            time.sleep(self.script.job_seconds)
        job = self.jobs.get(job_name)
        if job is None:  # the platform was reset meanwhile (a later test): nothing to finish
            return
        job["status"] = job["status_at_end"]
        if not self.script.host_url:
            return
        self._post_event(job_name, job["request"], job["status"], copies=self.script.event_copies)

    def _post_event(
        self,
        job_name: str,
        request: TrainingRequest | BatchTrainingRequest,
        status: str,
        copies: int = 1,
        event_id: str = "",
    ) -> None:
        completed = status == "Completed"
        event = {
            "id": event_id or f"evt-{job_name}",
            "topic": "/subscriptions/x/resourceGroups/rg/providers/"
            "Microsoft.MachineLearningServices/workspaces/memory",
            "subject": f"experiments/0/runs/{job_name}",
            "eventType": "Microsoft.MachineLearningServices."
            + ("RunCompleted" if completed else "RunStatusChanged"),
            "eventTime": datetime.now(UTC).isoformat(),
            "data": {
                "experimentId": "0",
                "experimentName": request.experiment_name,
                "runId": job_name,
                "runType": "azureml.scriptrun",
                "runProperties": {},
                "runTags": {
                    "orchestration_instance_id": request.instance_id,
                    "ticker": getattr(request, "ticker", ""),  # a batch job has many
                },
                "runStatus": status,
            },
            "dataVersion": "2",
            "metadataVersion": "1",
        }
        url = (
            f"{self.script.host_url}/runtime/webhooks/eventgrid?functionName=job_events"
            f"&code={self.script.system_key}"
        )
        for _ in range(copies):
            req = urllib.request.Request(
                url,
                data=json.dumps([event]).encode(),
                method="POST",
                headers={"Content-Type": "application/json", "aeg-event-type": "Notification"},
            )
            with urllib.request.urlopen(req, timeout=10) as response:
                self.events_sent.append((job_name, str(response.status)))

    def get_job(self, job_name: str) -> JobStatus:
        self.calls.append(("get_job", job_name))
        job = self.jobs.get(job_name)
        if job is None:
            raise PlatformError(f"no job {job_name}")
        error = None if job["status"] in ("Completed", "Running") else "scripted failure"
        return JobStatus(job_name=job_name, status=job["status"], error=error)

    def cancel_job(self, job_name: str) -> JobStatus | None:
        with self.lock:
            self.calls.append(("cancel_job", job_name))
            job = self.jobs.get(job_name)
            if job is None:
                return None
            if job["status"] == "Running":  # an ended job keeps its status; a running one ends Canceled
                job["status"] = job["status_at_end"] = "Canceled"
        return self.get_job(job_name)

    def get_job_metrics(self, job_name: str) -> dict[str, float]:
        self._scripted_failure("get_job_metrics")
        return dict(self.jobs[job_name]["metrics"])

    def get_job_test_errors(self, job_name: str) -> dict[str, Any] | None:
        return self.jobs[job_name].get("test_errors")

    # -- registry ------------------------------------------------------------------------------
    def register_model(self, name: str, job_name: str, tags: dict[str, str]) -> ModelRef:
        with self.lock:
            if self.jobs[job_name]["status"] != "Completed":
                raise PlatformError(f"job {job_name} did not complete")
            versions = self.models.setdefault(name, [])
            for model in versions:
                if model.tags.get("job_name") == job_name:
                    return model
            model = ModelRef(name=name, version=str(len(versions) + 1), tags={**tags, "job_name": job_name})
            versions.append(model)
            self.calls.append(("register_model", model.version))
            return model

    def get_champion(self, name: str) -> ModelRef | None:
        self._scripted_failure("get_champion")
        version = self.champions.get(name)
        return next((m for m in self.models.get(name, []) if m.version == version), None)

    def set_champion(self, model: ModelRef) -> None:
        self.calls.append(("set_champion", model.version))
        self.champions[model.name] = model.version

    # -- endpoint ------------------------------------------------------------------------------
    # ep = {"traffic": {slot: pct}, "slots": {slot: {"model", "ready_at", "state"}}, "op": pending or None}
    # A pending operation: {"kind", "reads_left", "apply": callable} applied when a read finds reads_left 0.
    def _advance(self, ep: dict[str, Any]) -> None:
        op = ep.get("op")
        if op is None:
            return
        if op["reads_left"] > 0:
            op["reads_left"] -= 1
            return
        ep["op"] = None
        op["apply"]()

    def _begin(self, endpoint: str, kind: str, apply: Any) -> dict[str, Any]:
        ep = self.endpoints.get(endpoint)
        if ep is None:
            raise PlatformError(f"no endpoint {endpoint}; create it first")
        if self.script.busy_reads > 0:  # someone else's operation got there first
            ep["op"] = {"kind": "foreign", "reads_left": self.script.busy_reads, "apply": lambda: None}
            self.script.busy_reads = 0
        if ep.get("op") is not None:
            self.calls.append(("busy", kind))
            raise EndpointBusyError(f"endpoint {endpoint} is busy with a {ep['op']['kind']} operation (409)")
        reads = self.script.op_polls if kind == "traffic" else 0
        ep["op"] = {"kind": kind, "reads_left": reads, "apply": apply}
        return ep

    def _endpoint(self, name: str) -> EndpointState:
        ep = self.endpoints.get(name)
        if ep is None:
            return EndpointState(name=name, state="NotFound")
        op = ep.get("op")
        return EndpointState(
            name=name,
            state="Updating" if op is not None and op["kind"] in ("traffic", "foreign") else "Succeeded",
            scoring_uri=f"memory://{name}/score",
            traffic=dict(ep["traffic"]),
            deployments={s: d["model"] for s, d in ep["slots"].items()},
        )

    def begin_create_endpoint(self, name: str) -> EndpointState:
        self.endpoints.setdefault(name, {"traffic": {}, "slots": {}, "op": None})
        return EndpointState(name=name, state="Creating")

    def get_endpoint(self, name: str) -> EndpointState:
        with self.lock:
            op = self.endpoints.get(name, {}).get("op")
            if op is not None and op["kind"] in ("traffic", "foreign"):
                self._advance(self.endpoints[name])
            return self._endpoint(name)

    def begin_deployment(self, endpoint: str, slot: str, model: ModelRef) -> DeploymentState:
        if self.script.deploy_gate is not None:
            self.script.deploying.set()
            # Released by the test or bench that set it (in a finally); the bound only keeps a forgotten gate
            # from holding an activity forever. bench_rollout_history holds a rollout here while 200 fleets
            # of one reach it, which takes longer than a minute.
            self.script.deploy_gate.wait(900)
        with self.lock:
            current = self.endpoints.get(endpoint, {}).get("slots", {}).get(slot)
            if current is not None and current["state"] == "Failed":
                raise PlatformError(
                    f"deployment {endpoint}/{slot} failed its first provisioning and cannot be updated; delete it"
                )
            failing = slot in self.script.failing_deployments
            self.script.failing_deployments.discard(slot)

            def create() -> None:
                ep["slots"][slot]["state"] = "Failed" if failing else "Succeeded"

            ep = self._begin(endpoint, "deployment", create)
            self.calls.append(("begin_deployment", slot))
            self.operations.append((endpoint, "deploy", slot, model.name, model.version))
            ep["slots"][slot] = {
                "model": model.to_dict(),
                "ready_at": time.monotonic() + 0.2,
                "state": "Creating",
            }
            ep["traffic"].setdefault(slot, 0)
            return DeploymentState(endpoint=endpoint, slot=slot, state="Creating", model=model.to_dict())

    def get_deployment(self, endpoint: str, slot: str) -> DeploymentState:
        with self.lock:
            ep = self.endpoints.get(endpoint)
            op = (ep or {}).get("op")
            # A deployment takes a moment at least (ready_at); a delete or a foreign operation a read.
            if op is not None and op["kind"] != "traffic" and time.monotonic() >= op.get("ready_at", 0.0):
                self._advance(ep)
            info = (ep or {}).get("slots", {}).get(slot)
            if info is None:
                return DeploymentState(endpoint=endpoint, slot=slot, state="NotFound")
            state = "Failed" if slot in self.script.dead_slots else info["state"]
            error = "scripted failure" if state == "Failed" else None
            return DeploymentState(
                endpoint=endpoint, slot=slot, state=state, model=info["model"], error=error
            )

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> EndpointState:
        with self.lock:
            if traffic and sum(traffic.values()) != 100 and any(traffic.values()):
                raise PlatformError(f"traffic {traffic} does not sum to 100")
            ep = self.endpoints.get(endpoint) or {}
            missing = sorted(set(traffic) - set(ep.get("slots", {})))
            if missing:
                raise PlatformError(f"traffic {traffic} names slots without a deployment: {missing}")

            def apply() -> None:
                ep["traffic"] = dict(traffic)

            self._begin(endpoint, "traffic", apply)
            self.calls.append(("set_traffic", dict(traffic)))
            self.operations.append((endpoint, "traffic", dict(traffic)))
            return EndpointState(
                name=endpoint,
                state="Updating",
                scoring_uri=f"memory://{endpoint}/score",
                traffic=dict(traffic),
            )

    def invoke(self, endpoint: str, payload: dict[str, Any], slot: str | None = None) -> dict[str, Any]:
        with self.lock:
            ep = self.endpoints[endpoint]
            live = {s: p for s, p in ep["traffic"].items() if p > 0}
            if slot is None and not live:
                raise PlatformError(f"endpoint {endpoint} answered 404: no valid deployments to route to")
            chosen = slot or max(live, key=lambda s: live[s])
            info = ep["slots"].get(chosen)
            if info is None or info["state"] != "Succeeded" or chosen in self.script.dead_slots:
                raise PlatformError(f"slot {chosen} of {endpoint} did not answer (502)")
            if is_bundle(info["model"]):
                if "instances" in payload:  # a batch: one answer per instance, an error in its place
                    answers = []
                    for one in payload["instances"]:
                        try:
                            answers.append(self._score_bundle(endpoint, chosen, info["model"], one, slot))
                        except PlatformError as exc:
                            answers.append({"ticker": one.get("ticker"), "error": str(exc), "status": 404})
                    self.calls.append(("score_batch", (chosen, len(answers))))
                    # The bundle's name and version, as scorer/score.py's batch answer names them.
                    bundle = self.bundles[(endpoint, info["model"]["version"])]
                    return {
                        "predictions": answers,
                        "bundle": {"name": bundle.name, "version": bundle.version},
                    }
                return self._score_bundle(endpoint, chosen, info["model"], payload, pinned=slot)
            last = payload["close"][-1]
            broken = chosen in self.script.broken_slots or (slot is None and self.script.broken_unpinned)
            value = float("nan") if broken else last * 1.001
            return {"forecast": [value], "model": info["model"]}

    def _score_bundle(
        self, endpoint: str, slot: str, deployed: dict[str, Any], payload: dict[str, Any], pinned: str | None
    ) -> dict[str, Any]:
        """As scorer/score.py answers for a bundle: the ticker's model names itself, and the bundle."""
        bundle = self.bundles[(endpoint, deployed["version"])]
        ticker = payload.get("ticker")
        if ticker is None and len(bundle.tickers) == 1:
            ticker = next(iter(bundle.tickers))
        model = bundle.model_of(str(ticker))
        if model is None:
            raise PlatformError(f"{endpoint} answered 400: the bundle does not hold ticker {ticker!r}")
        broken = (
            slot in self.script.broken_slots
            or f"{model.name}:{model.version}" in self.script.broken_models
            or (pinned is None and self.script.broken_unpinned)
        )
        value = float("nan") if broken else payload["close"][-1] * 1.001
        return {
            "forecast": [value],
            "ticker": ticker,
            "model": {"name": model.name, "version": model.version},
            "bundle": {"name": bundle.name, "version": bundle.version},
        }

    # -- bundles (ports.MLPlatform) --------------------------------------------------------
    def register_bundle(
        self,
        endpoint: str,
        version: str,
        parent: BundleRef | None,
        changes: dict[str, ModelRef],
        orchestration_ids: list[str],
        removed: list[str] | None = None,
    ) -> BundleRef:
        tickers = {
            t: dict(e) for t, e in (parent.tickers if parent else {}).items() if t not in (removed or [])
        }
        for ticker, model in changes.items():
            tickers[ticker] = {
                "model_name": model.name,
                "model_version": model.version,
                "family": model.tags.get("model_family"),
                "fitted_data_end": model.tags.get("fitted_data_end"),
            }
        bundle = BundleRef(
            name=naming.bundle_name(endpoint),
            version=version,
            endpoint=endpoint,
            tickers=tickers,
            parent_version=parent.version if parent else None,
            changed=sorted(changes),
            removed=sorted(removed or []),
            orchestration_ids=list(orchestration_ids),
        )
        with self.lock:
            existing = self.bundles.get((endpoint, version))
            if existing is not None:
                if (existing.tickers, existing.parent_version) != (bundle.tickers, bundle.parent_version):
                    raise PlatformError(
                        f"bundle {bundle.name}:{version} exists with other content (immutable)"
                    )
                return existing
            self.bundles[(endpoint, version)] = bundle
            self.calls.append(("register_bundle", (endpoint, version, sorted(changes))))
            return bundle

    def get_bundle(self, endpoint: str, version: str) -> BundleRef | None:
        return self.bundles.get((endpoint, version))

    def begin_delete_deployment(self, endpoint: str, slot: str) -> DeploymentState:
        with self.lock:
            ep = self.endpoints.get(endpoint, {})
            if slot not in ep.get("slots", {}):
                return DeploymentState(endpoint=endpoint, slot=slot, state="NotFound")
            if ep["traffic"].get(slot):
                raise PlatformError(f"deployment {endpoint}/{slot} has traffic; move it first")

            def delete() -> None:
                ep["slots"].pop(slot, None)
                ep["traffic"].pop(slot, None)

            self._begin(endpoint, "delete", delete)
            self.calls.append(("delete_deployment", slot))
            return DeploymentState(endpoint=endpoint, slot=slot, state="Deleting")

    # -- monitoring time series ----------------------------------------------------------------
    def log_monitor_metrics(self, ticker: str, day: str, metrics: dict[str, float]) -> None:
        monitor_experiment_name(ticker)
        _, _, kept = monitor_metric_point(day, metrics)  # the same checks as the real adapters
        self._scripted_failure("log_monitor_metrics")
        with self.lock:
            logged = self.monitor_metrics.setdefault(ticker, {}).setdefault(day, {})
            for key, value in kept.items():
                logged.setdefault(key, float(value))  # a day already logged keeps its first values

    def deliver_event(self, job_name: str, status: str) -> None:
        """Post an Event Grid event about a job to the host's webhook, whatever the job's real status."""
        job = self.jobs[job_name]
        self._post_event(job_name, job["request"], status, event_id=f"evt-{job_name}-forged-{status}")


_SHARED = MemoryPlatform()


def shared() -> MemoryPlatform:
    return _SHARED
