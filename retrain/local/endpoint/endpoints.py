"""`LocalEndpoints`: the MLPlatform endpoint operations on the local machine (create, deploy a slot,
traffic, invoke, delete, restore, stop), and who serves each endpoint's scoring URL: a router in this
process, or a detached router process (`retrain serve`) that outlives it and is adopted by the next one."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrain.local.endpoint.operations import DRAIN_TIMEOUT_S, TRAFFIC_APPLY_DELAY_S, EndpointOperations
from retrain.local.endpoint.router import ScoringRouter, router_status
from retrain.local.endpoint.routing import (
    DEPLOYMENT_HEADER,
    validate_endpoint_name,
    validate_slot,
    validate_traffic,
)
from retrain.local.endpoint.slots import SlotSupervisor
from retrain.local.endpoint.state import _now
from retrain.local.inference_server import LOCAL_HOST, stop_inference_server
from retrain.local.processes import (
    free_port,
    process_alive,
    process_start_ticks,
    stop_process_group,
    tail,
)
from retrain.ports import (
    DeploymentState,
    EndpointState,
    ModelRef,
    PlatformError,
    ScoringUnavailableError,
    TransientPlatformError,
    retry_after_seconds,
)

log = logging.getLogger("retrain.local.endpoint")

# fetch_model(model, dest): put the registered model's files under `dest` (the MLflow model in dest/model).
ModelFetcher = Callable[[ModelRef, Path], None]


class LocalEndpoints(EndpointOperations, SlotSupervisor):
    """Blue/green online endpoints under `<state>/endpoints/`. The MLPlatform endpoint calls.

    As in Azure, traffic updates and deletes are long-running: the call returns `Updating`/`Deleting`
    and a background thread finishes the operation (drain, then stop the process or apply the table);
    while an operation runs on an endpoint, another one is refused with `EndpointBusyError`. The
    operation is recorded in state.json with its owner's PID, so one whose owner died is finished by
    the next caller."""

    def __init__(self, state_dir: Path, fetch_model: ModelFetcher, scorer_script: Path) -> None:
        self.root = Path(state_dir) / "endpoints"
        self._fetch_model = fetch_model
        self._scorer = Path(scorer_script).resolve()
        self._routers: dict[str, ScoringRouter] = {}
        self._routers_lock = threading.Lock()
        # Slot processes this instance started or restored, as (pid, start ticks): what stop_all() stops,
        # so a `retrain run` exiting never stops the slots a concurrent `retrain serve` is serving.
        self._owned: set[tuple[int, int | None]] = set()
        self.traffic_delay_s = TRAFFIC_APPLY_DELAY_S
        self.broken: dict[str, str] = {}  # endpoint -> why restore() could not bring it back
        self._workers: list[threading.Thread] = []
        self._supervisor: threading.Thread | None = None
        self._stopping = threading.Event()
        self._me = {"pid": os.getpid(), "start_ticks": process_start_ticks(os.getpid())}
        # `retrain serve` sets this: each router then runs as its own detached process (recorded in
        # state.json) that outlives this one, as an Azure endpoint outlives the Function App.
        self.detach_routers = False
        self._owned_routers: dict[str, tuple[int, int | None]] = {}  # endpoint -> detached router we run

    def _state_written(self, name: str) -> None:
        router = self._routers.get(name)
        if router is not None and router.running:
            router.reload(force=True)

    # -- router -----------------------------------------------------------------------------------

    def _ensure_router(self, name: str, state: dict[str, Any]) -> None:
        """Serve the endpoint's scoring URL unless it is served already: by this process, by a detached
        router process (adopted: this instance now owns it), or by another process on the same state dir
        (e.g. `retrain serve`). With `detach_routers` the router is started as its own process."""
        with self._routers_lock:
            router = self._routers.get(name)
            if router is not None and router.running:
                return
            owned = self._owned_routers.get(name)
            if owned is not None and process_alive(*owned):
                return
            port = int(state["router_port"])
            recorded = state.get("router") or {}
            if process_alive(recorded.get("pid"), recorded.get("start_ticks")) and router_status(port):
                self._owned_routers[name] = (recorded["pid"], recorded.get("start_ticks"))
                return
            if self.detach_routers:
                if not _port_answers(port):
                    self._spawn_router(name, port)
                return
            router = ScoringRouter(name, self._state_file(name), port)
            try:
                router.start()
            except OSError as exc:
                if _port_answers(router.port):
                    log.info("endpoint %s: scoring URL already served by another process (%s)", name, exc)
                    return
                raise TransientPlatformError(
                    f"cannot serve endpoint {name!r} on 127.0.0.1:{router.port} (kept in {self._state_file(name)}):"
                    f" {exc}; free that port or stop the process using it"
                ) from exc
            self._routers[name] = router
            if self._supervisor is None or not self._supervisor.is_alive():
                self._stopping.clear()
                self._supervisor = threading.Thread(
                    target=self._supervise, name="endpoint-supervisor", daemon=True
                )
                self._supervisor.start()

    def _spawn_router(self, name: str, port: int, timeout: float = 60.0) -> None:
        """Start the endpoint's router (and slot supervisor) as a detached process; wait until it answers."""
        log_path = self._dir(name) / "router.log"
        command = [sys.executable, "-m", "retrain.local.endpoint", "--state-dir", str(self.root.parent)]
        command += ["--endpoint", name, "--scorer", str(self._scorer)]
        with log_path.open("ab") as out:
            process = subprocess.Popen(
                command,
                cwd=str(self._dir(name)),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own session: it outlives the caller
            )
        key = (process.pid, process_start_ticks(process.pid))
        deadline = time.monotonic() + timeout
        while router_status(port) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                stop_process_group(*key)
                raise TransientPlatformError(
                    f"the router of endpoint {name!r} did not start; log {self._relative(str(log_path))}:\n"
                    f"{self._scrub(tail(log_path))}"
                )
            time.sleep(0.05)
        self._owned_routers[name] = key
        with self._locked(name):
            state = self._require(name)
            state["router"] = {"pid": key[0], "start_ticks": key[1]}
            self._write(name, state)

    # -- MLPlatform calls -------------------------------------------------------------------------

    def begin_create_endpoint(self, name: str) -> EndpointState:
        validate_endpoint_name(name)
        with self._locked(name):
            state = self._read(name)
            if state is None:
                state = {
                    "name": name,
                    "router_port": free_port(),
                    "created": _now(),
                    "traffic": {},
                    "slots": {},
                }
                self._write(name, state)
        self._ensure_router(name, state)
        return self.get_endpoint(name)

    def get_endpoint(self, name: str) -> EndpointState:
        validate_endpoint_name(name)
        self._settle(name)
        state = self._read(name)
        if state is None:
            return EndpointState(name=name, state="NotFound")
        return EndpointState(
            name=name,
            state="Updating" if state.get("operation") else "Succeeded",
            scoring_uri=f"http://{LOCAL_HOST}:{state['router_port']}/score",
            traffic={s: int(p) for s, p in state.get("traffic", {}).items()},
            deployments={slot: info.get("model") for slot, info in state.get("slots", {}).items()},
        )

    def begin_deployment(self, endpoint: str, slot: str, model: ModelRef) -> DeploymentState:
        validate_slot(slot)
        self._require(endpoint)
        self._settle(endpoint)
        with self._locked(endpoint):
            state = self._require(endpoint)
            current = state["slots"].get(slot)
            same_model = current is not None and _model_key(current.get("model")) == _model_key(
                model.to_dict()
            )
            alive = current is not None and process_alive(current.get("pid"), current.get("start_ticks"))
            if same_model and alive and not current.get("deleting"):
                return self._deployment_state(endpoint, slot, current)  # idempotent repeat
            self._refuse_if_busy(endpoint, state)
            if current is not None:
                if not current.get("provisioned") and not process_alive(
                    current.get("pid"), current.get("start_ticks")
                ):
                    raise PlatformError(
                        f"deployment {slot!r} of {endpoint!r} failed its first provisioning and cannot be "
                        "updated; delete it (begin_delete_deployment, wait for NotFound), then create it again"
                    )
                if not same_model and state.get("traffic", {}).get(slot, 0) > 0:
                    raise PlatformError(
                        f"slot {slot!r} of {endpoint!r} serves {state['traffic'][slot]}% of traffic; move its "
                        "traffic to the other slot before deploying a different model to it"
                    )
                stop_inference_server(current.get("pid"), current.get("start_ticks"))
            model_dir = self._materialise_model(endpoint, slot, model)
            info = self._start_slot(endpoint, slot, model, model_dir)
            state["slots"][slot] = info
            state.setdefault("traffic", {}).setdefault(slot, 0)
            self._write(endpoint, state)
        self._ensure_router(endpoint, state)
        return self._deployment_state(endpoint, slot, info)

    def get_deployment(self, endpoint: str, slot: str) -> DeploymentState:
        validate_slot(slot)
        validate_endpoint_name(endpoint)
        self._settle(endpoint)
        state = self._read(endpoint)
        info = (state or {}).get("slots", {}).get(slot)
        if info is None:
            return DeploymentState(endpoint=endpoint, slot=slot, state="NotFound")
        if info.get("deleting"):
            return DeploymentState(endpoint=endpoint, slot=slot, state="Deleting", model=info.get("model"))
        deployment = self._deployment_state(endpoint, slot, info)
        if deployment.state == "Succeeded" and not info.get("provisioned"):
            with self._locked(endpoint):  # remember it was live once: a later crash is restarted, not Failed
                state = self._require(endpoint)
                if state["slots"].get(slot, {}).get("pid") == info.get("pid"):
                    state["slots"][slot]["provisioned"] = True
                    self._write(endpoint, state)
        return deployment

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> EndpointState:
        self._require(endpoint)
        self._settle(endpoint)
        with self._locked(endpoint):
            state = self._require(endpoint)
            self._refuse_if_busy(endpoint, state)
            table = validate_traffic(traffic, set(state["slots"]))
            for slot, percent in table.items():
                info = state["slots"].get(slot)
                if percent > 0 and not process_alive(info.get("pid"), info.get("start_ticks")):
                    raise PlatformError(
                        f"slot {slot!r} of {endpoint!r} is not running (see {self._relative(info.get('log'))}); "
                        "redeploy it before giving it traffic"
                    )
            self._begin(endpoint, state, {"kind": "traffic update", "traffic": table})
        self._ensure_router(endpoint, state)
        return self.get_endpoint(endpoint)

    def invoke(self, endpoint: str, payload: dict[str, Any], slot: str | None = None) -> dict[str, Any]:
        state = self._require(endpoint)
        self._ensure_router(endpoint, state)
        headers = {"Content-Type": "application/json"}
        if slot is not None:
            headers[DEPLOYMENT_HEADER] = validate_slot(slot)
        request = urllib.request.Request(
            f"http://{LOCAL_HOST}:{state['router_port']}/score",
            data=json.dumps(payload).encode(),
            headers=headers,
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:1000].decode("utf-8", "replace")
            message = f"endpoint {endpoint!r} answered {exc.code}: {detail}"
            wait = retry_after_seconds(exc.headers.get("Retry-After")) if exc.code in (429, 503) else None
            if wait is not None:  # no slot can answer yet (starting or restarting): the caller may wait
                raise ScoringUnavailableError(message, wait) from exc
            error = TransientPlatformError if exc.code >= 500 else PlatformError
            raise error(message) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise TransientPlatformError(f"endpoint {endpoint!r} did not answer: {exc}") from exc

    def begin_delete_deployment(self, endpoint: str, slot: str) -> DeploymentState:
        validate_slot(slot)
        validate_endpoint_name(endpoint)
        self._settle(endpoint)
        state = self._read(endpoint)
        if state is None or slot not in state.get("slots", {}):
            return DeploymentState(endpoint=endpoint, slot=slot, state="NotFound")
        with self._locked(endpoint):
            state = self._require(endpoint)
            info = state["slots"].get(slot)
            if info is None:
                return DeploymentState(endpoint=endpoint, slot=slot, state="NotFound")
            if info.get("deleting"):
                return DeploymentState(
                    endpoint=endpoint, slot=slot, state="Deleting", model=info.get("model")
                )
            self._refuse_if_busy(endpoint, state)
            if state.get("traffic", {}).get(slot, 0) > 0:
                raise PlatformError(
                    f"slot {slot!r} of {endpoint!r} still serves {state['traffic'][slot]}% of traffic; "
                    "set its traffic to 0 before deleting it"
                )
            info["deleting"] = True  # the router stops choosing it with this revision
            self._begin(endpoint, state, {"kind": "delete", "slot": slot})
        return DeploymentState(endpoint=endpoint, slot=slot, state="Deleting", model=info.get("model"))

    # -- lifecycle ---------------------------------------------------------------------------------

    def restore(self) -> list[EndpointState]:
        """Bring every endpoint under the state dir back up: the slots whose processes died are
        started again with their models (new ports are fine: the router follows state.json), and each
        scoring URL is served again on its kept port. An endpoint whose state cannot be read is left
        out (see `broken`) without stopping the others."""
        restored = []
        self.broken = {}
        for name in self.endpoint_names():
            try:
                restored.append(self._restore_one(name))
            except PlatformError as exc:
                log.error("endpoint %s not restored: %s", name, exc)
                self.broken[name] = str(exc)
        return restored

    def _restore_one(self, name: str) -> EndpointState:
        self._settle(name)
        with self._locked(name):
            state = self._require(name)
            for slot, info in list(state.get("slots", {}).items()):
                if info.get("deleting"):
                    continue
                if process_alive(info.get("pid"), info.get("start_ticks")):
                    self._owned.add((info["pid"], info.get("start_ticks")))  # adopted: we serve it now
                    continue
                if not info.get("provisioned"):
                    continue  # it never came up: it stays Failed until deleted
                model = ModelRef.from_dict(info["model"])
                model_dir = self._materialise_model(name, slot, model)
                state["slots"][slot] = {**self._start_slot(name, slot, model, model_dir), "provisioned": True}
            self._write(name, state)
        self._ensure_router(name, state)
        return self.get_endpoint(name)

    def wait_until_ready(self, name: str, timeout: float = 180.0) -> EndpointState:
        """Block until every slot of the endpoint answers and no operation is in progress, and (when
        this process serves the endpoint) its router sees the slots with traffic live."""
        deadline = time.monotonic() + timeout
        while True:
            state = self._require(name)
            waiting = []
            for slot in state.get("slots", {}):
                deployment = self.get_deployment(name, slot)
                if deployment.state == "Failed":
                    raise PlatformError(f"slot {slot} of {name} failed: {deployment.error}")
                if deployment.state != "Succeeded":
                    waiting.append(f"{slot} {deployment.state}")
            endpoint = self.get_endpoint(name)
            if endpoint.state != "Succeeded":
                waiting.append(f"endpoint {endpoint.state}")
            router = self._routers.get(name)
            if router is not None and router.running:
                live = router.status()["live"]
            else:
                live = (router_status(int(state["router_port"])) or {}).get("live")
            if live is not None:
                waiting += [
                    f"router sees {slot} down"
                    for slot, percent in endpoint.traffic.items()
                    if percent > 0 and not live.get(slot)
                ]
            if not waiting:
                return endpoint
            if time.monotonic() > deadline:
                raise TransientPlatformError(
                    f"endpoint {name} not ready after {timeout:.0f}s: {', '.join(waiting)}"
                )
            time.sleep(0.1)

    def stop_routers(self) -> None:
        """Stop serving the scoring URLs this instance serves: its in-process routers and the detached
        router processes it started or adopted (the slot processes keep running)."""
        self.release()
        for key in self._owned_routers.values():
            stop_process_group(*key, timeout=15)
        self._owned_routers.clear()

    def release(self) -> None:
        """Stop this process's own routers and threads, leaving every process running (detached
        routers, slots): a restart of `retrain serve` adopts them and the scoring URL never goes down."""
        self._stopping.set()
        for worker in self._workers:
            worker.join(timeout=DRAIN_TIMEOUT_S)  # an operation under way finishes first
        with self._routers_lock:
            for router in self._routers.values():
                router.stop()
            self._routers.clear()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
            self._supervisor = None

    def stop_all(self, everything: bool = False) -> None:
        """Stop this instance's routers and the slot processes it started or restored (by PID), with
        every slot of an endpoint whose detached router it ran (that router restarts crashed slots), or
        with `everything` every slot process recorded under the state dir. The state stays:
        `restore()` brings it all back."""
        served = set(self._owned_routers)
        self.stop_routers()
        for name in self.endpoint_names():
            try:
                state = self._read(name) or {}
            except PlatformError:
                continue
            for info in state.get("slots", {}).values():
                key = (info.get("pid"), info.get("start_ticks"))
                if everything or name in served or key in self._owned:
                    stop_inference_server(*key)
        self._owned.clear()


def _model_key(model: dict[str, Any] | None) -> tuple[str, str] | None:
    return (str(model["name"]), str(model["version"])) if model else None


def _port_answers(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((LOCAL_HOST, port)) == 0
