"""An in-memory `MLPlatform` for orchestration tests (ports and adapters: it stands in for the platform,
not for the Functions host, the SDK or the Event Grid trigger, which all run for real).

Jobs "finish" on a background thread after `job_seconds` and, like the local platform, deliver Azure
ML's Event Grid event to the host's real webhook; scripted knobs make the paths under test happen:
lost events, failed jobs, duplicate events, metrics that fail the gate, a slot that answers garbage.
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

from retrain.ports import (
    DataAsset,
    DeploymentState,
    EndpointState,
    JobStatus,
    ModelRef,
    PlatformError,
    TrainingRequest,
)


@dataclass
class Script:
    """What the next jobs and slots do."""

    host_url: str | None = None  # where events go; None = events are lost
    system_key: str | None = None
    job_seconds: float = 0.3
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

    def _finish(self, job_name: str) -> None:
        time.sleep(self.script.job_seconds)
        job = self.jobs[job_name]
        job["status"] = job["status_at_end"]
        if not self.script.host_url:
            return
        request: TrainingRequest = job["request"]
        completed = job["status"] == "Completed"
        event = {
            "id": f"evt-{job_name}",
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
                "runTags": {"orchestration_instance_id": request.instance_id, "ticker": request.ticker},
                "runStatus": job["status"],
            },
            "dataVersion": "2",
            "metadataVersion": "1",
        }
        url = (
            f"{self.script.host_url}/runtime/webhooks/eventgrid?functionName=job_events"
            f"&code={self.script.system_key}"
        )
        for _ in range(self.script.event_copies):
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

    def get_job_metrics(self, job_name: str) -> dict[str, float]:
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
        version = self.champions.get(name)
        return next((m for m in self.models.get(name, []) if m.version == version), None)

    def set_champion(self, model: ModelRef) -> None:
        self.calls.append(("set_champion", model.version))
        self.champions[model.name] = model.version

    # -- endpoint ------------------------------------------------------------------------------
    def _endpoint(self, name: str) -> EndpointState:
        ep = self.endpoints.get(name)
        if ep is None:
            return EndpointState(name=name, state="NotFound")
        return EndpointState(
            name=name,
            state="Succeeded",
            scoring_uri=f"memory://{name}/score",
            traffic=dict(ep["traffic"]),
            deployments={s: d["model"] for s, d in ep["slots"].items()},
        )

    def begin_create_endpoint(self, name: str) -> EndpointState:
        self.endpoints.setdefault(name, {"traffic": {}, "slots": {}})
        return EndpointState(name=name, state="Creating")

    def get_endpoint(self, name: str) -> EndpointState:
        return self._endpoint(name)

    def begin_deployment(self, endpoint: str, slot: str, model: ModelRef) -> DeploymentState:
        self.calls.append(("begin_deployment", slot))
        ep = self.endpoints[endpoint]
        ep["slots"][slot] = {"model": model.to_dict(), "ready_at": time.monotonic() + 0.2}
        ep["traffic"].setdefault(slot, 0)
        return DeploymentState(endpoint=endpoint, slot=slot, state="Creating", model=model.to_dict())

    def get_deployment(self, endpoint: str, slot: str) -> DeploymentState:
        info = self.endpoints.get(endpoint, {}).get("slots", {}).get(slot)
        if info is None:
            return DeploymentState(endpoint=endpoint, slot=slot, state="NotFound")
        state = "Succeeded" if time.monotonic() >= info["ready_at"] else "Creating"
        return DeploymentState(endpoint=endpoint, slot=slot, state=state, model=info["model"])

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> EndpointState:
        self.calls.append(("set_traffic", dict(traffic)))
        ep = self.endpoints[endpoint]
        if traffic and sum(traffic.values()) != 100:
            raise PlatformError(f"traffic {traffic} does not sum to 100")
        ep["traffic"] = dict(traffic)
        return self._endpoint(endpoint)

    def invoke(self, endpoint: str, payload: dict[str, Any], slot: str | None = None) -> dict[str, Any]:
        ep = self.endpoints[endpoint]
        chosen = slot or max(ep["traffic"], key=lambda s: ep["traffic"][s])
        last = payload["close"][-1]
        value = float("nan") if chosen in self.script.broken_slots else last * 1.001
        return {"forecast": [value], "model": ep["slots"][chosen]["model"]}

    def begin_delete_deployment(self, endpoint: str, slot: str) -> DeploymentState:
        self.calls.append(("delete_deployment", slot))
        ep = self.endpoints[endpoint]
        ep["slots"].pop(slot, None)
        ep["traffic"].pop(slot, None)
        return DeploymentState(endpoint=endpoint, slot=slot, state="NotFound")


_SHARED = MemoryPlatform()


def shared() -> MemoryPlatform:
    return _SHARED
