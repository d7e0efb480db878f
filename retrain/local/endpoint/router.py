"""The router: the endpoint's stable scoring URL, a threaded HTTP/1.1 keep-alive reverse proxy on
127.0.0.1 with a pool of keep-alive connections to each slot. It follows state.json, probes each slot's
liveness and never forwards to a slot it knows is down; the decisions themselves are in `routing`."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from retrain.local.endpoint.routing import (
    DEPLOYMENT_HEADER,
    RETRY_AFTER_S,
    RoutingTable,
    WeightedPicker,
    choose_slot,
)
from retrain.local.inference_server import LOCAL_HOST, is_live
from retrain.local.processes import read_json

log = logging.getLogger("retrain.local.endpoint")

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
            previous = self._live.get((slot, port))
            if previous == live:
                return
            self._live[(slot, port)] = live
            if self._table.ports.get(slot) == port:
                self._picker = self._live_picker()
        if live:
            log.info("endpoint %s: slot %s is live", self.name, slot)
        elif previous is None:  # first probe of a slot still starting: expected, not a fault
            log.info("endpoint %s: slot %s is not answering yet", self.name, slot)
        else:
            log.warning("endpoint %s: slot %s is down", self.name, slot)

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
            choice = choose_slot(self.name, self._table, self._picker, self._live, pinned, method, tried)
            if isinstance(choice[0], str):
                self._inflight[choice[0]] = self._inflight.get(choice[0], 0) + 1
            return choice

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
                    except (OSError, http.client.HTTPException) as exc:
                        # The slot went down under us (before or in the middle of its answer: a cut
                        # answer is an IncompleteRead, not an OSError): never route there again until it
                        # answers its probe, and send the request to another live slot with traffic.
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
