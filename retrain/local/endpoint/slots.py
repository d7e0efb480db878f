"""The slots' processes and their health: a slot's model put in place (Azure's layout), its inference
server started, its state as Azure reports it (Succeeded only while it answers its liveness probe and
the router sees it live), and the supervisor that restarts a slot whose server died after it had been
live (as Azure restarts a crashed container; a first start that failed stays Failed)."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrain.local.endpoint.router import HEALTH_INTERVAL_S, ScoringRouter, router_status
from retrain.local.endpoint.state import EndpointStateStore, _now
from retrain.local.inference_server import ServerProcess, is_live, start_inference_server
from retrain.local.processes import free_port, process_alive, tail
from retrain.ports import DeploymentState, ModelRef, PlatformError, is_bundle

log = logging.getLogger("retrain.local.endpoint")

RESTART_BACKOFF_S = 5.0  # a crashed slot is restarted at most this often


class SlotSupervisor(EndpointStateStore):
    """Slot processes and health for LocalEndpoints (which sets `_fetch_model`, `_scorer`, `_owned`,
    `_routers` and `_stopping`)."""

    _stopping: threading.Event
    _routers: dict[str, ScoringRouter]
    _fetch_model: Callable[[ModelRef, Path], None]
    _scorer: Path
    _owned: set[tuple[int, int | None]]

    def _supervise(self) -> None:
        """Restart the slots of the endpoints this process serves whose inference server died after it
        had been live (Azure restarts a crashed container); a first start that failed stays Failed."""
        while not self._stopping.wait(HEALTH_INTERVAL_S):
            for name in list(self._routers):
                try:
                    self._restart_dead_slots(name)
                except Exception as exc:  # noqa: BLE001 - keep supervising the others
                    log.warning("endpoint %s: could not restart a slot: %s", name, exc)

    def _restart_dead_slots(self, name: str) -> None:
        state = self._read(name) or {}
        dead = [
            slot
            for slot, info in state.get("slots", {}).items()
            if info.get("provisioned")
            and not info.get("deleting")
            and not process_alive(info.get("pid"), info.get("start_ticks"))
        ]
        if not dead:
            return
        with self._locked(name):
            state = self._require(name)
            changed = False
            for slot in dead:
                info = state["slots"].get(slot)
                if (
                    not info
                    or info.get("deleting")
                    or process_alive(info.get("pid"), info.get("start_ticks"))
                ):
                    continue
                if time.time() - float(info.get("restarted_at", 0)) < RESTART_BACKOFF_S:
                    continue
                log.warning("endpoint %s: slot %s (pid %s) died; restarting it", name, slot, info.get("pid"))
                model = ModelRef.from_dict(info["model"])
                restarted = self._start_slot(name, slot, model, Path(info["model_dir"]))
                state["slots"][slot] = {
                    **restarted,
                    "provisioned": True,
                    "restarts": int(info.get("restarts", 0)) + 1,
                    "restarted_at": time.time(),
                }
                changed = True
            if changed:
                self._write(name, state)

    def _materialise_model(self, endpoint: str, slot: str, model: ModelRef) -> Path:
        """The model's files at `<slot>/azureml-models/<name>/<version>/` (Azure's layout), fetched
        into a temp dir then renamed, so a half-downloaded model is never served. A bundle is served
        from its registered folder under `<state>/bundles/` itself (immutable, so no copy is needed)."""
        models = self._dir(endpoint) / slot / "azureml-models"
        if is_bundle(model):
            from retrain.local.bundle_store import bundle_folder  # the bundle store imports this package

            folder = bundle_folder(self.root.parent, model.name, model.version)
            if not (folder / "bundle.json").is_file():
                raise PlatformError(
                    f"bundle {model.name} version {model.version} is not registered; register it "
                    "(register_bundle) before deploying it"
                )
            for old in models.glob("*/*"):  # what this slot served before is not needed any more
                if not old.name.startswith("."):
                    shutil.rmtree(old, ignore_errors=True)
            return folder
        target = models / model.name / model.version
        if target.is_dir():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{model.version}.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            self._fetch_model(model, staging)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        # Other models this slot served before are not needed any more.
        for old in models.glob("*/*"):
            if old != target and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)
        return target

    def _start_slot(self, endpoint: str, slot: str, model: ModelRef, model_dir: Path) -> dict[str, Any]:
        if not self._scorer.is_file():
            raise PlatformError(f"scoring script {self._scorer} not found; the endpoint runs scorer/score.py")
        log_path = self._dir(endpoint) / slot / "server.log"
        server = start_inference_server(self._scorer, model_dir, free_port(), log_path)
        self._owned.add((server.pid, server.start_ticks))
        return {
            "model": model.to_dict(),
            "pid": server.pid,
            "start_ticks": server.start_ticks,
            "port": server.port,
            "model_dir": str(model_dir),
            "log": str(log_path),
            "started": _now(),
        }

    def _deployment_state(self, endpoint: str, slot: str, info: dict[str, Any]) -> DeploymentState:
        """Succeeded only while the slot answers its liveness probe: Creating during its first start,
        Failed if that start failed, Updating while a slot that was live is down or restarting."""
        server = ServerProcess(info["pid"], info.get("start_ticks"), int(info["port"]), info["log"])
        model = info.get("model")
        if not server.alive():
            if info.get("provisioned"):
                return DeploymentState(
                    endpoint=endpoint,
                    slot=slot,
                    state="Updating",
                    model=model,
                    error=f"inference server (pid {server.pid}) is down; the endpoint restarts it",
                )
            return DeploymentState(
                endpoint=endpoint,
                slot=slot,
                state="Failed",
                model=model,
                error=f"inference server (pid {server.pid}) is not running; log "
                f"{self._relative(server.log_path)}, tail:\n{self._scrub(tail(Path(server.log_path)))}",
            )
        # Succeeded means requests reach it: live, and not unseen by the router that serves the endpoint.
        if is_live(server.port) and self._router_sees_live(endpoint, slot) is not False:
            return DeploymentState(endpoint=endpoint, slot=slot, state="Succeeded", model=model)
        if info.get("provisioned"):
            return DeploymentState(
                endpoint=endpoint, slot=slot, state="Updating", model=model, error="restarting: not live yet"
            )
        return DeploymentState(endpoint=endpoint, slot=slot, state="Creating", model=model)

    def _router_sees_live(self, endpoint: str, slot: str) -> bool | None:
        """Whether the router serving the endpoint (in this process or another) sees the slot live;
        None when no router serves it."""
        router = self._routers.get(endpoint)
        if router is not None and router.running:
            return router.is_live(slot)
        state = self._read(endpoint) or {}
        status = router_status(int(state["router_port"])) if "router_port" in state else None
        return None if status is None else bool(status["live"].get(slot))

    def _relative(self, path: str | None) -> str:
        """A path under the state dir as `<state>/...`: error texts do not expose the machine's paths."""
        return self._scrub(str(path))

    def _scrub(self, text: str) -> str:
        for prefix, name in (
            (str(self.root.parent.resolve()), "<state>"),
            (str(self.root.parent), "<state>"),
            (str(self._scorer.parent.parent), "<repo>"),
            (os.path.expanduser("~"), "~"),
        ):
            if prefix and prefix not in ("/", "."):
                text = text.replace(prefix, name)
        return text
