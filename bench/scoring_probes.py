"""Two lower bounds for bench_scoring.py, each run in a process of its own:

wsgi   the slot's application without its socket: azmlinfsrv's Flask app (its request hooks, its
       logging to a file, scorer/score.py's run()) called as a WSGI callable, N requests at a time on
       command. Whatever serves through azmlinfsrv costs at least this plus the HTTP hop.
http   one bare HTTP hop: a stdlib HTTP/1.1 keep-alive server (the router's server class) that
       answers every POST with a constant JSON body, touching no model. What one Python hop over
       loopback costs on this machine, before any application work.

  python bench/scoring_probes.py wsgi --entry-script scorer/score.py --model-dir DIR --log FILE
      stdin: one request count per line; stdout: one JSON list of seconds per line
  python bench/scoring_probes.py http --port P
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def serve_wsgi(entry_script: Path, model_dir: Path, log_path: Path, body: bytes) -> None:
    # Our channel is the original stdout; the server's own logging (and its print hook) goes to the log
    # file, as a slot's goes to its server.log.
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.environ.update(
        {
            "AZUREML_MODEL_DIR": str(model_dir),
            "AML_APP_ROOT": str(entry_script.parent),
            "AZUREML_ENTRY_SCRIPT": str(entry_script),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        }
    )
    from azureml_inference_server_http.server.create_app import create
    from werkzeug.test import EnvironBuilder

    app = create()
    base = EnvironBuilder(
        path="/score", method="POST", data=body, headers={"Content-Type": "application/json"}
    ).get_environ()
    status: list[str] = []

    def start_response(code: str, headers: list[tuple[str, str]]) -> None:
        status.append(code)

    def one() -> bytes:
        environ = dict(base)
        environ["wsgi.input"] = io.BytesIO(body)
        return b"".join(app.wsgi_app(environ, start_response))

    answer = one()
    if not status or not status[-1].startswith("200"):
        raise RuntimeError(f"the app answered {status[-1:]} {answer[:300]!r}")
    channel.write(json.dumps({"ready": True, "answer": answer.decode()}) + "\n")
    for line in sys.stdin:
        samples = []
        for _ in range(int(line)):
            t0 = time.perf_counter()
            one()
            samples.append(time.perf_counter() - t0)
        channel.write(json.dumps(samples) + "\n")


def serve_constant(port: int) -> None:
    payload = json.dumps({"forecast": [0.0], "model": {"name": "none", "version": "0", "window": 0}}).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            pass

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self._headers_buffer.append(b"\r\n" + payload)  # type: ignore[attr-defined]
            self.flush_headers()

        do_GET = do_POST  # noqa: N815 - the liveness check

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    Server(("127.0.0.1", port), Handler).serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="probe", required=True)
    wsgi = sub.add_parser("wsgi")
    wsgi.add_argument("--entry-script", type=Path, required=True)
    wsgi.add_argument("--model-dir", type=Path, required=True)
    wsgi.add_argument("--log", type=Path, required=True)
    wsgi.add_argument("--body", required=True, help="the JSON request body")
    http = sub.add_parser("http")
    http.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.probe == "wsgi":
        serve_wsgi(args.entry_script, args.model_dir, args.log, args.body.encode())
    else:
        serve_constant(args.port)


if __name__ == "__main__":
    main()
