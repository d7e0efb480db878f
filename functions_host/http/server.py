"""The local Functions host's stdlib threaded HTTP server: request framing and the worker bound.

Hardened for a hostile local caller: socket timeouts for idle and slow clients, a bounded number of
worker threads, a listen backlog for bursts, 400 for malformed framing; every request goes to the
`HostRouter` (functions_host/http/router.py)."""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from functions_host.functions import HttpResult
from functions_host.http.messages import Request, shown, text_response
from functions_host.http.router import HostRouter

log = logging.getLogger("functions_host.http.server")

MAX_BODY_BYTES = 100 * 1024 * 1024  # the Functions host's default request size limit
# A worker is held by a connection until it sends its request, so these bound what slow clients cost:
# with 300 connections that never finish, a normal request waited ~120 s at 30 s / 64 threads, ~20 s
# at 10 s / 128 threads (measured; local callers send their request at once).
SOCKET_TIMEOUT_S = 10.0  # an idle or stalled client is dropped after this long without a byte
BODY_DEADLINE_S = 60.0  # the whole body must arrive within this, however slowly it trickles
MAX_WORKER_THREADS = 128  # connections served at once; more wait in the listen backlog
LISTEN_BACKLOG = 512


class _BadFraming(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    server: HostHTTPServer
    protocol_version = "HTTP/1.0"  # one request per connection: nothing outlives stop()
    timeout = SOCKET_TIMEOUT_S  # StreamRequestHandler sets it on the socket: idle/stalled clients go

    def _content_length(self) -> int:
        if self.headers.get("Transfer-Encoding"):
            raise _BadFraming(411, "Length Required: send the body with a Content-Length header")
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return 0
        if len(set(values)) > 1:
            raise _BadFraming(400, "Bad Request: conflicting Content-Length headers; send one")
        raw = values[0].strip()
        if not raw.isdigit() or len(raw) > 15:
            raise _BadFraming(
                400, f"Bad Request: Content-Length {shown(raw)} is not a byte count; send a whole number"
            )
        length = int(raw)
        if length > MAX_BODY_BYTES:
            raise _BadFraming(
                413, f"Payload Too Large: {length} bytes; the host takes at most {MAX_BODY_BYTES} bytes"
            )
        return length

    def _read_body(self, length: int) -> bytes:
        """Exactly `length` bytes within BODY_DEADLINE_S (a trickling client cannot pin a thread)."""
        deadline = time.monotonic() + BODY_DEADLINE_S
        chunks: list[bytes] = []
        remaining = length
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError("the body did not arrive in time")
            chunk = self.rfile.read1(min(remaining, 1 << 16)) if hasattr(self.rfile, "read1") else b""
            if not chunk:
                raise ConnectionError("the client closed the connection before sending the whole body")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def _dispatch(self) -> None:
        try:
            length = self._content_length()
        except _BadFraming as exc:
            self.close_connection = True
            self._send(text_response(exc.status, str(exc)))
            return
        try:
            body = self._read_body(length) if length else b""
        except (TimeoutError, OSError):
            self.close_connection = True  # a slow or vanished client: nothing to answer
            return
        parsed = urllib.parse.urlsplit(self.path)
        request = Request(
            method=self.command.upper(),
            path=parsed.path or "/",
            query=dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)),
            headers={k: v for k, v in self.headers.items()},
            body=body,
            origin=self.server.base_url,  # the host's own address, never the request's Host header
        )
        self._send(self.server.router.handle(request))

    def _send(self, result: HttpResult) -> None:
        self.send_response(result.status)
        names = {k.lower() for k, _ in result.headers}
        for key, value in result.headers:
            if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(key, value)
        if "content-type" not in names and result.body:
            self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(result.body)))
        self.end_headers()
        if self.command != "HEAD" and result.body:
            self.wfile.write(result.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The stdlib's framing errors (request line too long, bad version, too many headers) echo the
        # raw request line back; answer without it.
        super().send_error(code, message and shown(message, 200), explain and shown(explain, 200))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s - %s", self.address_string(), shown(format % args, 300))


class HostHTTPServer(ThreadingHTTPServer):
    """The threaded stdlib server with a bound on worker threads: a connection waits in the listen
    backlog (LISTEN_BACKLOG) until one of MAX_WORKER_THREADS is free, and every socket times out."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        host: str,
        port: int,
        router: HostRouter | None = None,
        max_threads: int = MAX_WORKER_THREADS,
    ) -> None:
        super().__init__((host, port), _Handler)
        self.router: HostRouter = router  # type: ignore[assignment]  # set before serving
        self.base_url = f"http://{host}:{self.port}"
        self._slots = threading.BoundedSemaphore(max_threads)
        self._closing = threading.Event()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        # Wait for a free worker (the accept loop pauses; new connections queue in the backlog).
        while not self._slots.acquire(timeout=0.2):
            if self._closing.is_set():
                self.shutdown_request(request)
                return
        try:
            if isinstance(request, socket.socket):
                request.settimeout(SOCKET_TIMEOUT_S)
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def shutdown(self) -> None:
        self._closing.set()
        super().shutdown()
