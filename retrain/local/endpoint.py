"""The local online endpoint: blue/green slots behind one stable scoring URL.

Each slot is a real `azmlinfsrv` process running `scorer/score.py` with the slot's model (see
`inference_server.py`). One small threaded reverse proxy on 127.0.0.1 (the router) is the endpoint's
scoring URL: it sends each request to a slot by the traffic weights (smooth weighted round-robin),
or to the slot named in the `azureml-model-deployment` header, as Azure does.

Everything lives in `<state>/endpoints/<endpoint>/state.json` (written atomically under a file lock):
the router's port (chosen once, so the scoring URL never changes), the traffic weights and each
slot's model, PID and port. The router reads its routing table from that file whenever the file
changes, so a weight change made by any process takes effect at once and drops no request: the table
is swapped as one object and requests in flight finish on the slot they were sent to.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from retrain.local.inference_server import (
    LOCAL_HOST,
    ServerProcess,
    is_live,
    start_inference_server,
    stop_inference_server,
)
from retrain.local.processes import free_port, process_alive, read_json, tail, write_json_atomic
from retrain.ports import (
    SLOTS,
    DeploymentState,
    EndpointState,
    ModelRef,
    PlatformError,
    TransientPlatformError,
)

log = logging.getLogger("retrain.local.endpoint")

DEPLOYMENT_HEADER = "azureml-model-deployment"
_ENDPOINT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")

# fetch_model(model, dest): put the registered model's files under `dest` (the MLflow model in dest/model).
ModelFetcher = Callable[[ModelRef, Path], None]


# ----------------------------------------------------------------------------------------------------
# Pure routing logic


class WeightedPicker:
    """Smooth weighted round-robin (as nginx does): over any 100 consecutive picks each slot gets
    exactly its percentage, interleaved rather than in bursts. Thread-safe."""

    def __init__(self, weights: dict[str, int]) -> None:
        self._weights = {slot: w for slot, w in weights.items() if w > 0}
        self._current = dict.fromkeys(self._weights, 0)
        self._total = sum(self._weights.values())
        self._lock = threading.Lock()

    def pick(self) -> str | None:
        if not self._weights:
            return None
        with self._lock:
            for slot, weight in self._weights.items():
                self._current[slot] += weight
            best = max(self._current, key=lambda s: self._current[s])
            self._current[best] -= self._total
            return best


def validate_traffic(traffic: dict[str, Any], deployed: set[str]) -> dict[str, int]:
    """Check a traffic table the way Azure does: known, deployed slots; integer percentages 0..100
    summing to 100. Returns the table with every deployed slot present."""
    if not isinstance(traffic, dict) or not traffic:
        raise PlatformError(
            f"traffic must be a non-empty mapping slot -> percent, e.g. {{'blue': 100}}; got {traffic!r}"
        )
    for slot, percent in traffic.items():
        if slot not in SLOTS:
            raise PlatformError(f"unknown slot {slot!r} in traffic; slots are {', '.join(SLOTS)}")
        if slot not in deployed and percent:
            raise PlatformError(
                f"slot {slot!r} has no deployment; deploy a model to it before giving it traffic"
            )
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise PlatformError(f"traffic for {slot!r} must be an integer 0..100; got {percent!r}")
    total = sum(traffic.values())
    if total != 100:
        raise PlatformError(f"traffic percentages must sum to 100; {traffic} sums to {total}")
    return {slot: int(traffic.get(slot, 0)) for slot in sorted(deployed | set(traffic))}


def validate_endpoint_name(name: str) -> str:
    if not isinstance(name, str) or not _ENDPOINT_NAME.match(name):
        raise PlatformError(
            f"endpoint name {name!r} is invalid: use 3-32 letters, digits or '-', starting with a letter "
            "and not ending with '-' (e.g. 'msft-forecast')"
        )
    return name


def validate_slot(slot: str) -> str:
    if slot not in SLOTS:
        raise PlatformError(f"unknown slot {slot!r}; slots are {', '.join(SLOTS)}")
    return slot


# ----------------------------------------------------------------------------------------------------
# The router


@dataclass(frozen=True)
class RoutingTable:
    """An immutable snapshot the router swaps in whole."""

    picker: WeightedPicker
    ports: dict[str, int] = field(default_factory=dict)  # slot -> port of its inference server

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RoutingTable:
        ports = {slot: int(info["port"]) for slot, info in state.get("slots", {}).items()}
        weights = {slot: w for slot, w in state.get("traffic", {}).items() if slot in ports}
        return cls(picker=WeightedPicker(weights), ports=ports)


class ScoringRouter:
    """The endpoint's stable scoring URL: a threaded reverse proxy on 127.0.0.1:<port>."""

    def __init__(self, name: str, state_file: Path, port: int) -> None:
        self.name = name
        self.port = port
        self._state_file = state_file
        self._table = RoutingTable(picker=WeightedPicker({}))
        self._table_key: tuple[int, int] | None = None
        self._reload_lock = threading.Lock()
        self._inflight: dict[str, int] = {}
        self._inflight_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # The routing table follows state.json: rename gives a new inode, so (inode, mtime) changes.
    def table(self) -> RoutingTable:
        try:
            st = self._state_file.stat()
            key: tuple[int, int] | None = (st.st_ino, st.st_mtime_ns)
        except FileNotFoundError:
            key = None
        if key != self._table_key:
            with self._reload_lock:
                if key != self._table_key:
                    try:
                        state = read_json(self._state_file) if key else {}
                    except (OSError, ValueError):
                        return self._table  # mid-replace on an odd filesystem: keep the last table
                    self._table = RoutingTable.from_state(state)
                    self._table_key = key
        return self._table

    def inflight(self, slot: str) -> int:
        with self._inflight_lock:
            return self._inflight.get(slot, 0)

    @contextlib.contextmanager
    def _track(self, slot: str) -> Iterator[None]:
        with self._inflight_lock:
            self._inflight[slot] = self._inflight.get(slot, 0) + 1
        try:
            yield
        finally:
            with self._inflight_lock:
                self._inflight[slot] -= 1

    def start(self) -> None:
        router = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "retrain-local-endpoint"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                log.debug("%s: " + format, router.name, *args)

            def do_GET(self) -> None:  # noqa: N802 - stdlib naming
                if self.path.split("?")[0] != "/":
                    self._reply(404, {"error": f"no route {self.path}; use POST /score or GET /"})
                    return
                self._forward("GET", b"")

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.path.split("?")[0] != "/score":
                    self._reply(404, {"error": f"no route {self.path}; POST scoring requests to /score"})
                    return
                self._forward("POST", body)

            def _forward(self, method: str, body: bytes) -> None:
                table = router.table()
                pinned = self.headers.get(DEPLOYMENT_HEADER)
                if pinned:
                    if pinned not in table.ports:
                        self._reply(
                            404,
                            {
                                "error": f"deployment {pinned!r} not found on endpoint {router.name}; "
                                f"deployed slots: {sorted(table.ports)}"
                            },
                        )
                        return
                    slot: str | None = pinned
                else:
                    slot = table.picker.pick()
                    if slot is None and method == "GET" and table.ports:
                        slot = sorted(table.ports)[0]  # liveness with no traffic yet: any deployed slot
                if slot is None:
                    self._reply(
                        503,
                        {
                            "error": f"endpoint {router.name} has no deployment with traffic; "
                            "deploy a model and set traffic first"
                        },
                    )
                    return
                with router._track(slot):
                    try:
                        conn = http.client.HTTPConnection(LOCAL_HOST, table.ports[slot], timeout=120)
                        headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
                        conn.request(
                            method, "/score" if method == "POST" else "/", body=body or None, headers=headers
                        )
                        response = conn.getresponse()
                        payload = response.read()
                        content_type = response.getheader("Content-Type", "application/json")
                        status = response.status
                        conn.close()
                    except OSError as exc:
                        self._reply(502, {"error": f"slot {slot} did not answer: {exc}"}, slot)
                        return
                self._send(status, payload, content_type, slot)

            def _reply(self, status: int, data: dict[str, Any], slot: str | None = None) -> None:
                self._send(status, json.dumps(data).encode(), "application/json", slot)

            def _send(self, status: int, payload: bytes, content_type: str, slot: str | None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                if slot:
                    self.send_header(DEPLOYMENT_HEADER, slot)
                self.end_headers()
                self.wfile.write(payload)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128

        self._server = Server((LOCAL_HOST, self.port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"router-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._server is not None


# ----------------------------------------------------------------------------------------------------
# The endpoints


class LocalEndpoints:
    """Blue/green online endpoints under `<state>/endpoints/`. The MLPlatform endpoint calls."""

    def __init__(self, state_dir: Path, fetch_model: ModelFetcher, scorer_script: Path) -> None:
        self.root = Path(state_dir) / "endpoints"
        self._fetch_model = fetch_model
        self._scorer = Path(scorer_script).resolve()
        self._routers: dict[str, ScoringRouter] = {}
        self._routers_lock = threading.Lock()
        # Slot processes this instance started or restored, as (pid, start ticks): what stop_all() stops,
        # so a `retrain run` exiting never stops the slots a concurrent `retrain serve` is serving.
        self._owned: set[tuple[int, int | None]] = set()

    # -- state ------------------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        return self.root / name

    def _state_file(self, name: str) -> Path:
        return self._dir(name) / "state.json"

    def _read(self, name: str) -> dict[str, Any] | None:
        path = self._state_file(name)
        return read_json(path) if path.is_file() else None

    def _require(self, name: str) -> dict[str, Any]:
        state = self._read(validate_endpoint_name(name))
        if state is None:
            raise PlatformError(
                f"endpoint {name!r} does not exist; create it first with begin_create_endpoint"
            )
        return state

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """Serialise read-modify-write of one endpoint's state across threads and processes."""
        self._dir(name).mkdir(parents=True, exist_ok=True)
        with (self._dir(name) / ".lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _write(self, name: str, state: dict[str, Any]) -> None:
        write_json_atomic(self._state_file(name), state)

    def scoring_uri(self, name: str) -> str:
        state = self._require(name)
        return f"http://{LOCAL_HOST}:{state['router_port']}/score"

    def endpoint_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob("*/state.json"))

    # -- router -----------------------------------------------------------------------------------

    def _ensure_router(self, name: str, state: dict[str, Any]) -> None:
        """Serve the endpoint's scoring URL from this process unless it is served already (by this
        process, or by another one on the same state dir, e.g. `retrain serve`)."""
        with self._routers_lock:
            router = self._routers.get(name)
            if router is not None and router.running:
                return
            router = ScoringRouter(name, self._state_file(name), int(state["router_port"]))
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
        state = self._read(name)
        if state is None:
            return EndpointState(name=name, state="NotFound")
        return EndpointState(
            name=name,
            state="Succeeded",
            scoring_uri=f"http://{LOCAL_HOST}:{state['router_port']}/score",
            traffic={s: int(p) for s, p in state.get("traffic", {}).items()},
            deployments={slot: info.get("model") for slot, info in state.get("slots", {}).items()},
        )

    def begin_deployment(self, endpoint: str, slot: str, model: ModelRef) -> DeploymentState:
        validate_slot(slot)
        self._require(endpoint)
        with self._locked(endpoint):
            state = self._require(endpoint)
            current = state["slots"].get(slot)
            if current is not None:
                same_model = _model_key(current.get("model")) == _model_key(model.to_dict())
                if same_model and process_alive(current.get("pid"), current.get("start_ticks")):
                    return self._deployment_state(endpoint, slot, current)  # idempotent repeat
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
        state = self._read(validate_endpoint_name(endpoint))
        info = (state or {}).get("slots", {}).get(slot)
        if info is None:
            return DeploymentState(endpoint=endpoint, slot=slot, state="NotFound")
        return self._deployment_state(endpoint, slot, info)

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> EndpointState:
        self._require(endpoint)
        with self._locked(endpoint):
            state = self._require(endpoint)
            table = validate_traffic(traffic, set(state["slots"]))
            for slot, percent in table.items():
                info = state["slots"].get(slot)
                if percent > 0 and not process_alive(info.get("pid"), info.get("start_ticks")):
                    raise PlatformError(
                        f"slot {slot!r} of {endpoint!r} is not running (see {info.get('log')}); "
                        "redeploy it before giving it traffic"
                    )
            state["traffic"] = table
            self._write(endpoint, state)  # the router picks the new table up atomically
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
            error = TransientPlatformError if exc.code >= 500 else PlatformError
            raise error(f"endpoint {endpoint!r} answered {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise TransientPlatformError(f"endpoint {endpoint!r} did not answer: {exc}") from exc

    def begin_delete_deployment(self, endpoint: str, slot: str) -> DeploymentState:
        validate_slot(slot)
        state = self._read(validate_endpoint_name(endpoint))
        if state is None or slot not in state.get("slots", {}):
            return DeploymentState(endpoint=endpoint, slot=slot, state="NotFound")
        with self._locked(endpoint):
            state = self._require(endpoint)
            info = state["slots"].get(slot)
            if info is None:
                return DeploymentState(endpoint=endpoint, slot=slot, state="NotFound")
            if state.get("traffic", {}).get(slot, 0) > 0:
                raise PlatformError(
                    f"slot {slot!r} of {endpoint!r} still serves {state['traffic'][slot]}% of traffic; "
                    "set its traffic to 0 before deleting it"
                )
            del state["slots"][slot]
            state["traffic"].pop(slot, None)
            self._write(endpoint, state)  # the router stops choosing it before the process goes
        self._drain(endpoint, slot)
        stop_inference_server(info.get("pid"), info.get("start_ticks"))
        shutil.rmtree(self._dir(endpoint) / slot, ignore_errors=True)
        return DeploymentState(endpoint=endpoint, slot=slot, state="NotFound", model=info.get("model"))

    # -- lifecycle ---------------------------------------------------------------------------------

    def restore(self) -> list[EndpointState]:
        """Bring every endpoint under the state dir back up: the slots whose processes died are
        started again with their models (new ports are fine: the router follows state.json), and each
        scoring URL is served again on its kept port."""
        restored = []
        for name in self.endpoint_names():
            with self._locked(name):
                state = self._require(name)
                for slot, info in list(state.get("slots", {}).items()):
                    if process_alive(info.get("pid"), info.get("start_ticks")):
                        self._owned.add((info["pid"], info.get("start_ticks")))  # adopted: we serve it now
                        continue
                    model = ModelRef.from_dict(info["model"])
                    model_dir = self._materialise_model(name, slot, model)
                    state["slots"][slot] = self._start_slot(name, slot, model, model_dir)
                self._write(name, state)
            self._ensure_router(name, state)
            restored.append(self.get_endpoint(name))
        return restored

    def wait_until_ready(self, name: str, timeout: float = 180.0) -> EndpointState:
        """Block until every slot of the endpoint answers (for `retrain serve` and tests)."""
        deadline = time.monotonic() + timeout
        for slot in self._require(name).get("slots", {}):
            while True:
                deployment = self.get_deployment(name, slot)
                if deployment.state == "Succeeded":
                    break
                if deployment.state == "Failed":
                    raise PlatformError(f"slot {slot} of {name} failed: {deployment.error}")
                if time.monotonic() > deadline:
                    raise TransientPlatformError(f"slot {slot} of {name} not live after {timeout:.0f}s")
                time.sleep(0.25)
        return self.get_endpoint(name)

    def stop_routers(self) -> None:
        with self._routers_lock:
            for router in self._routers.values():
                router.stop()
            self._routers.clear()

    def stop_all(self, everything: bool = False) -> None:
        """Stop this instance's routers and the slot processes it started or restored (by PID), or
        with `everything` every slot process recorded under the state dir. The state stays:
        `restore()` brings it all back."""
        self.stop_routers()
        for name in self.endpoint_names():
            state = self._read(name) or {}
            for info in state.get("slots", {}).values():
                key = (info.get("pid"), info.get("start_ticks"))
                if everything or key in self._owned:
                    stop_inference_server(*key)
        self._owned.clear()

    # -- helpers ----------------------------------------------------------------------------------

    def _materialise_model(self, endpoint: str, slot: str, model: ModelRef) -> Path:
        """The model's files at `<slot>/azureml-models/<name>/<version>/` (Azure's layout), fetched
        into a temp dir then renamed, so a half-downloaded model is never served."""
        models = self._dir(endpoint) / slot / "azureml-models"
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
        server = ServerProcess(info["pid"], info.get("start_ticks"), int(info["port"]), info["log"])
        if not server.alive():
            return DeploymentState(
                endpoint=endpoint,
                slot=slot,
                state="Failed",
                model=info.get("model"),
                error=f"inference server (pid {server.pid}) is not running; log tail:\n{tail(Path(server.log_path))}",
            )
        state = "Succeeded" if is_live(server.port) else "Creating"
        return DeploymentState(endpoint=endpoint, slot=slot, state=state, model=info.get("model"))

    def _drain(self, endpoint: str, slot: str, timeout: float = 30.0) -> None:
        """Let requests this process's router already sent to the slot finish."""
        router = self._routers.get(endpoint)
        time.sleep(0.2)  # a request that read the old table just before the change is counted by now
        deadline = time.monotonic() + timeout
        while router is not None and router.inflight(slot) > 0 and time.monotonic() < deadline:
            time.sleep(0.05)


def _model_key(model: dict[str, Any] | None) -> tuple[str, str] | None:
    return (str(model["name"]), str(model["version"])) if model else None


def _port_answers(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((LOCAL_HOST, port)) == 0


def _now() -> str:
    return datetime.now(UTC).isoformat()
