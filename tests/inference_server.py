"""Start the real Azure ML inference server (`azmlinfsrv`) for an entry script and a model folder on
127.0.0.1, wait until it is live, and stop it by its PID.

`azmlinfsrv` itself always binds 0.0.0.0 (its `DEFAULT_HOST`); we run the same CLI entry point
(`azureml_inference_server_http.amlserver:run`) with that one constant set to 127.0.0.1 first, so
nothing listens beyond the loopback. Everything else (argument parsing, environment, gunicorn, the
Flask app, `init()`) is the unchanged server.

    with start_inference_server(Path("scorer/score.py"), model_dir) as server:
        requests.post(server.scoring_url, json={"close": [...]})
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

LOOPBACK = "127.0.0.1"


# The `azmlinfsrv` console script, with the bind host pinned to the loopback.
class InferenceServerError(RuntimeError):
    """The server did not come up (the message carries the end of its log)."""


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago (the OS picks it: bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class InferenceServer:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    _log_file: object = field(repr=False, default=None)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def scoring_url(self) -> str:
        return f"{self.base_url}/score"

    def is_running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, max_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-max_chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the server (gunicorn's master stops its workers gracefully), then SIGKILL whatever is
        left of its process group after `timeout`. Returns the exit code. Safe to call twice."""
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # The server runs in its own session, so its process group id is its PID: this reaches the
        # workers it forked even if the master died first.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL was ignored
            code = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def __enter__(self) -> InferenceServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def is_live(base_url: str, timeout: float = 2.0) -> bool:
    """`GET /` (the liveness probe) answers 200."""
    try:
        with urllib.request.urlopen(f"{base_url}/", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def start_inference_server(
    entry_script: Path,
    model_dir: Path,
    *,
    port: int | None = None,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 180.0,
    worker_count: int = 1,
) -> InferenceServer:
    """Start `azmlinfsrv --entry_script ENTRY --model_dir MODEL` on 127.0.0.1 and wait for `GET /`.

    `env` adds to (and overrides) the current environment. The working directory and AML_APP_ROOT are
    the entry script's folder, as the deployment's code configuration is in Azure. On failure to come
    up the server is stopped and InferenceServerError carries the end of its log.
    """
    entry_script = Path(entry_script).resolve()
    model_dir = Path(model_dir).resolve()
    if not entry_script.is_file():
        raise FileNotFoundError(f"entry script {entry_script} does not exist")
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    port = port or free_port()
    if log_path is None:
        log_path = Path(tempfile.mkdtemp(prefix="azmlinfsrv-")) / "server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)

    child_env = {**os.environ, **(env or {})}
    child_env.update(
        AML_APP_ROOT=str(entry_script.parent),
        PYTHONUNBUFFERED="1",
        AML_APP_INSIGHTS_ENABLED="false",
        # gunicorn >= 25 otherwise opens a control socket at one fixed path per user
        # (~/.gunicorn/gunicorn.ctl), shared by every server on the machine.
        GUNICORN_CMD_ARGS=f"{child_env.get('GUNICORN_CMD_ARGS', '')} --no-control-socket".strip(),
    )
    command = [
        sys.executable,
        "-m",
        "retrain.local.inference_server",  # the launcher the local endpoint uses: 127.0.0.1 only
        "--entry_script",
        str(entry_script),
        "--model_dir",
        str(model_dir),
        "--port",
        str(port),
        "--worker_count",
        str(worker_count),
    ]
    log_file = open(log_path, "ab")  # noqa: SIM115 - closed by InferenceServer.stop()
    process = subprocess.Popen(
        command,
        cwd=entry_script.parent,
        env=child_env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = InferenceServer(process=process, port=port, log_path=log_path, _log_file=log_file)
    try:
        _wait_until_live(server, startup_timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_live(server: InferenceServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.is_running():
            raise InferenceServerError(
                f"azmlinfsrv exited with code {server.process.returncode} before it was live; log:\n"
                f"{server.log_tail()}"
            )
        if is_live(server.base_url):
            return
        time.sleep(0.2)
    raise InferenceServerError(
        f"azmlinfsrv not live on port {server.port} after {timeout:.0f}s; log:\n{server.log_tail()}"
    )


def lay_out_like_azure(mlflow_model_dir: Path, root: Path, name: str, version: str | int) -> Path:
    """Copy an MLflow model folder into Azure's online-deployment layout
    `<root>/<name>/<version>/<folder name>/MLmodel` and return `<root>/<name>/<version>` (what Azure
    sets AZUREML_MODEL_DIR to)."""
    version_dir = Path(root) / name / str(version)
    target = version_dir / Path(mlflow_model_dir).name
    shutil.copytree(mlflow_model_dir, target)
    return version_dir
