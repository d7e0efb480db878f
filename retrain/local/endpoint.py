"""The local online endpoint: blue/green slots behind one stable scoring URL, as strict as Azure.

Each slot is a real `azmlinfsrv` process running `scorer/score.py` with the slot's model (see
`inference_server.py`). One small threaded HTTP/1.1 reverse proxy on 127.0.0.1 (the router) is the
endpoint's scoring URL: it sends each request to a slot by the traffic weights (smooth weighted
round-robin), or to the slot named in the `azureml-model-deployment` header, as Azure does. It keeps
alive its clients' connections and a small pool of connections to each slot, probes each slot's
liveness and never forwards to a slot it knows is down (503 with Retry-After when no slot with traffic
is live; 404 "No valid deployments to route to" when no slot has traffic, as Azure answers).

Everything lives in `<state>/endpoints/<endpoint>/state.json` (written atomically under a file lock,
with a revision number): the router's port (chosen once, so the scoring URL never changes), the applied
traffic, each slot's model, PID and port, and the operation in progress. As in Azure, a traffic update
or a delete is long-running (`Updating`/`Deleting` first) and an endpoint takes one operation at a time
(`EndpointBusyError`, Azure's 409). The router follows state.json and swaps its table as one object
under the lock that also counts requests in flight, so a delete stops a slot's process only after the
router routes by the new table with nothing in flight to it: no request is dropped.

Slot liveness for callers: `get_deployment` is `Succeeded` only while the slot answers its liveness
probe; `Creating` during its first start, `Failed` if that start failed (delete it before reuse),
`Updating` while a slot that was live is down and being restarted. The router's own status
(`GET /-/router` on the scoring port) lists the table revision, requests in flight and live slots.
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
import signal
import socket
import subprocess
import sys
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
from retrain.local.processes import (
    free_port,
    process_alive,
    process_start_ticks,
    read_json,
    stop_process_group,
    tail,
    write_json_atomic,
)
from retrain.ports import (
    SLOTS,
    DeploymentState,
    EndpointBusyError,
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

NO_VALID_DEPLOYMENTS = (
    "No valid deployments to route to. Please check that the endpoint has at least one deployment with "
    "positive weight values or use a deployment specific header to route."
)  # Azure's own 404 text for an endpoint whose deployments all have 0 % traffic
RETRY_AFTER_S = 2
ROUTER_STATUS_PATH = "/-/router"  # the router's own status (table revision, in-flight requests, live slots)
HEALTH_INTERVAL_S = 0.5
_STALE_CONNECTION = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    BrokenPipeError,
    ConnectionResetError,
)


class _NoDelayConnection(http.client.HTTPConnection):
    """A connection to a slot with Nagle off: a small request is never held back waiting for an ACK."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class SlotPool:
    """Keep-alive connections to one slot's inference server; thread-safe (a connection is used by one
    request at a time and given back after a complete response)."""

    def __init__(self, port: int, max_idle: int = 8) -> None:
        self.port = port
        self._idle: list[http.client.HTTPConnection] = []
        self._max_idle = max_idle
        self._lock = threading.Lock()

    def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, str]:
        """Send one request; a kept connection the slot closed meanwhile is retried once on a new one
        (scoring is a pure function, so repeating it is safe)."""
        for attempt in range(2):
            with self._lock:
                conn = self._idle.pop() if self._idle and attempt == 0 else None
            reused = conn is not None
            conn = conn or _NoDelayConnection(LOCAL_HOST, self.port, timeout=120)
            try:
                conn.request(method, path, body=body or None, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            except _STALE_CONNECTION:
                conn.close()
                if reused:
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            if response.will_close:
                conn.close()
            else:
                with self._lock:
                    if len(self._idle) < self._max_idle:
                        self._idle.append(conn)
                        conn = None
                if conn is not None:
                    conn.close()
            return response.status, payload, response.getheader("Content-Type", "application/json")
        raise ConnectionResetError(f"slot on port {self.port} closed the connection twice")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


@dataclass(frozen=True)
class RoutingTable:
    """An immutable snapshot the router swaps in whole: the applied traffic and the slots that may be
    routed to (a slot being deleted is not among them)."""

    weights: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)  # slot -> port of its inference server
    revision: int = 0

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RoutingTable:
        ports = {
            slot: int(info["port"])
            for slot, info in state.get("slots", {}).items()
            if not info.get("deleting")
        }
        weights = {slot: int(w) for slot, w in state.get("traffic", {}).items() if slot in ports and w > 0}
        return cls(weights=weights, ports=ports, revision=int(state.get("revision", 0)))


class ScoringRouter:
    """The endpoint's stable scoring URL: a threaded HTTP/1.1 keep-alive reverse proxy on 127.0.0.1.

    Every routing decision and the in-flight count it implies are taken under one lock, together with
    the table swap, so once the router reports a table revision and zero requests in flight on a slot,
    no request is or will be on its way to that slot. A health thread probes each slot; the router
    never forwards to a slot it knows is down."""

    def __init__(self, name: str, state_file: Path, port: int) -> None:
        self.name = name
        self.port = port
        self._state_file = state_file
        self._lock = threading.Lock()
        self._table = RoutingTable()
        self._picker = WeightedPicker({})
        self._file_key: tuple[int, int, int] | None = None
        self._live: dict[tuple[str, int], bool] = {}  # (slot, port) -> last health answer
        self._inflight: dict[str, int] = {}
        self._pools: dict[int, SlotPool] = {}
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    # -- table ---------------------------------------------------------------------------------------

    def reload(self, force: bool = False) -> RoutingTable:
        """Follow state.json (a rename gives a new inode; size and mtime catch the rest)."""
        try:
            st = self._state_file.stat()
            key: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            key = None
        if key == self._file_key and not force:
            return self._table
        try:
            state = read_json(self._state_file) if key else {}
        except (OSError, ValueError):
            return (
                self._table
            )  # unreadable (corrupt, or mid-replace on an odd filesystem): keep the last table
        table = RoutingTable.from_state(state)
        with self._lock:
            self._table = table
            self._picker = self._live_picker()
            self._file_key = key
            for port in set(self._pools) - set(table.ports.values()):
                self._pools.pop(port).close()
            return self._table

    def _live_picker(self) -> WeightedPicker:
        # Under self._lock: the weights restricted to slots known to be live.
        table = self._table
        return WeightedPicker(
            {s: w for s, w in table.weights.items() if self._live.get((s, table.ports[s]), False)}
        )

    def _set_live(self, slot: str, port: int, live: bool) -> None:
        with self._lock:
            if self._live.get((slot, port)) == live:
                return
            self._live[(slot, port)] = live
            if self._table.ports.get(slot) == port:
                self._picker = self._live_picker()
        log.log(
            logging.INFO if live else logging.WARNING,
            "endpoint %s: slot %s %s",
            self.name,
            slot,
            "is live" if live else "is down",
        )

    def is_live(self, slot: str) -> bool:
        with self._lock:
            port = self._table.ports.get(slot)
            return port is not None and self._live.get((slot, port), False)

    def status(self) -> dict[str, Any]:
        with self._lock:
            table = self._table
            return {
                "revision": table.revision,
                "inflight": {s: n for s, n in self._inflight.items() if n},
                "live": {s: self._live.get((s, p), False) for s, p in table.ports.items()},
                "traffic": dict(table.weights),
            }

    def inflight(self, slot: str) -> int:
        with self._lock:
            return self._inflight.get(slot, 0)

    # -- routing -------------------------------------------------------------------------------------

    def choose(
        self, pinned: str | None, method: str, tried: set[str]
    ) -> tuple[str, int] | tuple[int, dict[str, Any]]:
        """(slot, port) with the request counted in flight, or (status, error body)."""
        self.reload()
        with self._lock:
            table = self._table
            if pinned:
                if pinned not in table.ports:
                    return 404, {
                        "error": f"deployment {pinned!r} not found on endpoint {self.name}; "
                        f"deployed slots: {sorted(table.ports)}"
                    }
                candidates = [pinned] if pinned not in tried else []
            else:
                first = self._picker.pick()
                live = [s for s in table.weights if self._live.get((s, table.ports[s]))]
                candidates = [s for s in ([first] if first else []) + live if s not in tried]
                if not table.weights:
                    if (
                        method == "GET" and table.ports
                    ):  # liveness with no traffic yet: any live deployed slot
                        candidates = [
                            s
                            for s in sorted(table.ports)
                            if self._live.get((s, table.ports[s])) and s not in tried
                        ]
                    else:
                        return 404, {"error": NO_VALID_DEPLOYMENTS}
            for slot in candidates:
                if self._live.get((slot, table.ports[slot])):
                    self._inflight[slot] = self._inflight.get(slot, 0) + 1
                    return slot, table.ports[slot]
            target = f"deployment {pinned!r}" if pinned else "no deployment with traffic"
            return 503, {
                "error": f"endpoint {self.name}: {target} is live right now (starting or restarting); "
                f"retry in {RETRY_AFTER_S}s"
            }

    def done(self, slot: str) -> None:
        with self._lock:
            self._inflight[slot] -= 1

    def pool(self, port: int) -> SlotPool:
        with self._lock:
            pool = self._pools.get(port)
            if pool is None:
                pool = self._pools[port] = SlotPool(port)
            return pool

    # -- health --------------------------------------------------------------------------------------

    def _health_loop(self) -> None:
        while not self._stopping.is_set():
            table = self.reload()
            for slot, port in table.ports.items():
                self._set_live(slot, port, is_live(port, timeout=2.0))
            with self._lock:  # forget ports no slot uses any more
                for key in [k for k in self._live if self._table.ports.get(k[0]) != k[1]]:
                    del self._live[key]
            self._stopping.wait(HEALTH_INTERVAL_S)

    # -- server --------------------------------------------------------------------------------------

    def start(self) -> None:
        router = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "retrain-local-endpoint"
            protocol_version = "HTTP/1.1"  # keep-alive for clients that want it
            timeout = 75  # an idle keep-alive client is let go after this (as Azure's front end does)

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                log.debug("%s: " + format, router.name, *args)

            def do_GET(self) -> None:  # noqa: N802 - stdlib naming
                path = self.path.split("?")[0]
                if path == ROUTER_STATUS_PATH:
                    self._reply(200, router.status())
                elif path != "/":
                    self._reply(404, {"error": "no such route; use POST /score or GET /"})
                else:
                    self._forward("GET", b"")

            def do_POST(self) -> None:  # noqa: N802
                if self.headers.get("Transfer-Encoding"):
                    self.close_connection = True
                    self._reply(411, {"error": "send the body with a Content-Length header, not chunked"})
                    return
                raw_length = self.headers.get("Content-Length") or "0"
                if not raw_length.isdigit() or int(raw_length) > 64 << 20:
                    self.close_connection = True
                    self._reply(400, {"error": "Content-Length must be a byte count up to 64 MiB"})
                    return
                length = int(raw_length)
                body = self.rfile.read(length) if length else b""
                if self.path.split("?")[0] != "/score":
                    self._reply(404, {"error": "no such route; POST scoring requests to /score"})
                    return
                self._forward("POST", body)

            def _forward(self, method: str, body: bytes) -> None:
                pinned = self.headers.get(DEPLOYMENT_HEADER)
                headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
                tried: set[str] = set()
                while True:
                    choice = router.choose(pinned, method, tried)
                    if isinstance(choice[0], int):
                        status, error = choice
                        self._reply(status, error, retry_after=status == 503)  # type: ignore[arg-type]
                        return
                    slot, port = choice  # type: ignore[misc]
                    try:
                        status, payload, content_type = router.pool(port).request(
                            method, "/score" if method == "POST" else "/", body, headers
                        )
                    except OSError as exc:
                        # The slot went down under us: never route there again until it answers its
                        # probe, and send the request to another live slot with traffic, if any.
                        log.warning("endpoint %s: slot %s did not answer (%s)", router.name, slot, exc)
                        router._set_live(slot, port, False)
                        tried.add(slot)
                        continue
                    finally:
                        router.done(slot)
                    self._send(status, payload, content_type, slot)
                    return

            def _reply(
                self, status: int, data: dict[str, Any], slot: str | None = None, retry_after: bool = False
            ) -> None:
                extra = {"Retry-After": str(RETRY_AFTER_S)} if retry_after else {}
                self._send(status, json.dumps(data).encode(), "application/json", slot, extra)

            def _send(
                self,
                status: int,
                payload: bytes,
                content_type: str,
                slot: str | None,
                extra: dict[str, str] | None = None,
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                if slot:
                    self.send_header(DEPLOYMENT_HEADER, slot)
                # Headers and body in one write: no small segment waits for a delayed ACK.
                self._headers_buffer.append(b"\r\n" + payload)  # type: ignore[attr-defined]
                self.flush_headers()

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128

        self._stopping.clear()
        self.reload(force=True)
        self._server = Server((LOCAL_HOST, self.port), Handler)
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name=f"router-{self.name}", daemon=True),
            threading.Thread(target=self._health_loop, name=f"router-health-{self.name}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()

    @property
    def running(self) -> bool:
        return self._server is not None


def router_status(port: int, timeout: float = 2.0) -> dict[str, Any] | None:
    """The status of the router serving on `port` (whichever process runs it), or None if none answers."""
    try:
        with urllib.request.urlopen(
            f"http://{LOCAL_HOST}:{port}{ROUTER_STATUS_PATH}", timeout=timeout
        ) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------------
# The endpoints

TRAFFIC_APPLY_DELAY_S = 0.5  # a traffic update is applied this long after it is accepted (Azure: seconds)
RESTART_BACKOFF_S = 5.0  # a crashed slot is restarted at most this often
DRAIN_TIMEOUT_S = 60.0


class LocalEndpoints:
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

    # -- state ------------------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        return self.root / name

    def _state_file(self, name: str) -> Path:
        return self._dir(name) / "state.json"

    def _read(self, name: str) -> dict[str, Any] | None:
        path = self._state_file(name)
        if not path.is_file():
            return None
        try:
            state = read_json(path)
            if not isinstance(state, dict) or "router_port" not in state:
                raise ValueError("not an endpoint state object")
            return state
        except (OSError, ValueError) as exc:
            raise PlatformError(
                f"endpoint {name!r}: its state file {path} is unreadable ({exc}); restore it from a backup, "
                f"or delete the directory {path.parent} (after stopping its slot processes) so the next "
                "rollout creates the endpoint again"
            ) from exc

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
        """Write the state with a new revision; this process's router takes it at once."""
        state["revision"] = int(state.get("revision", 0)) + 1
        write_json_atomic(self._state_file(name), state)
        router = self._routers.get(name)
        if router is not None and router.running:
            router.reload(force=True)

    def scoring_uri(self, name: str) -> str:
        state = self._require(name)
        return f"http://{LOCAL_HOST}:{state['router_port']}/score"

    def endpoint_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob("*/state.json"))

    # -- operations in progress ---------------------------------------------------------------------

    def _settle(self, name: str) -> None:
        """Finish an operation whose owner process died before finishing it."""
        state = self._read(name)
        operation = (state or {}).get("operation")
        if not operation:
            return
        owner = operation.get("owner") or {}
        if process_alive(owner.get("pid"), owner.get("start_ticks")):
            return
        log.warning(
            "endpoint %s: finishing the %s its owner (pid %s) left", name, operation["kind"], owner.get("pid")
        )
        self._finish(name, operation)

    def _busy(self, name: str, state: dict[str, Any]) -> str | None:
        """Why the endpoint cannot take another operation now (under the lock), or None."""
        operation = state.get("operation")
        if operation:
            return f"a {operation['kind']} is in progress since {operation['started']}"
        for slot, info in state.get("slots", {}).items():
            if not info.get("provisioned") and process_alive(info.get("pid"), info.get("start_ticks")):
                if is_live(int(info["port"])):
                    info["provisioned"] = True
                    self._write(name, state)
                else:
                    return f"deployment {slot} is being created"
        return None

    def _refuse_if_busy(self, name: str, state: dict[str, Any]) -> None:
        reason = self._busy(name, state)
        if reason:
            raise EndpointBusyError(
                f"endpoint {name!r} is busy ({reason}); wait until it is Succeeded, then try again"
            )

    def _begin(self, name: str, state: dict[str, Any], operation: dict[str, Any]) -> None:
        """Record the operation (under the lock) and finish it in a background thread."""
        operation = {**operation, "started": _now(), "owner": self._me}
        state["operation"] = operation
        self._write(name, state)
        worker = threading.Thread(
            target=self._run_operation,
            args=(name, operation),
            name=f"endpoint-{name}-{operation['kind']}",
            daemon=True,
        )
        self._workers = [w for w in self._workers if w.is_alive()] + [worker]
        worker.start()

    def _run_operation(self, name: str, operation: dict[str, Any]) -> None:
        try:
            if operation["kind"] == "traffic update":
                self._stopping.wait(self.traffic_delay_s)
            self._finish(name, operation)
        except Exception:  # noqa: BLE001 - the next caller finishes it (its owner looks dead once we exit)
            log.exception("endpoint %s: %s did not finish", name, operation["kind"])

    def _finish(self, name: str, operation: dict[str, Any]) -> None:
        if operation["kind"] == "delete":
            slot = operation["slot"]
            before = self._read(name) or {}
            self._drain(name, int(before.get("router_port", 0)), slot, int(before.get("revision", 0)))
            info = before.get("slots", {}).get(slot) or {}
            stop_inference_server(info.get("pid"), info.get("start_ticks"))
            shutil.rmtree(self._dir(name) / slot, ignore_errors=True)
        with self._locked(name):
            state = self._read(name)
            if state is None or state.get("operation", {}).get("started") != operation["started"]:
                return  # finished by someone else
            if operation["kind"] == "traffic update":
                state["traffic"] = operation["traffic"]
            else:
                state["slots"].pop(operation["slot"], None)
                state["traffic"].pop(operation["slot"], None)
            del state["operation"]
            self._write(name, state)

    def _drain(self, name: str, router_port: int, slot: str, revision: int) -> None:
        """Wait until the router serving the endpoint (in whichever process) routes by `revision` or later
        and has no request in flight to `slot`: from then on nothing reaches the slot."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            router = self._routers.get(name)
            if router is not None and router.running:
                router.reload()
                status: dict[str, Any] | None = router.status()
            else:
                status = router_status(router_port) if router_port else None
            if status is None:
                return  # no router serves the endpoint: nothing can be in flight
            if int(status["revision"]) >= revision and not status["inflight"].get(slot):
                return
            time.sleep(0.05)
        log.warning(
            "endpoint %s: slot %s still had requests in flight after %.0fs", name, slot, DRAIN_TIMEOUT_S
        )

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
            error = TransientPlatformError if exc.code >= 500 else PlatformError
            raise error(f"endpoint {endpoint!r} answered {exc.code}: {detail}") from exc
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


def _model_key(model: dict[str, Any] | None) -> tuple[str, str] | None:
    return (str(model["name"]), str(model["version"])) if model else None


def _port_answers(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((LOCAL_HOST, port)) == 0


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _cannot_fetch(model: ModelRef, dest: Path) -> None:
    raise PlatformError(
        f"the endpoint's router process does not download models ({model.name}:{model.version})"
    )


def main(argv: list[str] | None = None) -> int:
    """One endpoint's router and slot supervisor as a process of its own (`retrain serve` starts it)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m retrain.local.endpoint", description=main.__doc__)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--scorer", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    endpoints = LocalEndpoints(args.state_dir, _cannot_fetch, args.scorer)
    endpoints._ensure_router(args.endpoint, endpoints._require(args.endpoint))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(1.0):
        if not endpoints._state_file(args.endpoint).is_file():
            break  # the endpoint is gone
    endpoints.release()  # the slots stay: whoever stops the router decides about them
    return 0


if __name__ == "__main__":
    sys.exit(main())
