"""Start and stop one Azure ML inference server (`azmlinfsrv`) process: one endpoint slot.

The process is the real `azureml-inference-server-http` (gunicorn + the Azure ML scoring app) running
`scorer/score.py`, exactly what a managed online deployment runs. `azmlinfsrv` binds 0.0.0.0; run as
`python -m retrain.local.inference_server ...` it is the same server bound to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from retrain.local.processes import process_alive, process_start_ticks, stop_process_group, tail
from retrain.scoring_server import SLOT_SERVER_ENVIRONMENT, SLOT_WORKERS

LOCAL_HOST = "127.0.0.1"


@dataclass(frozen=True)
class ServerProcess:
    pid: int
    start_ticks: int | None
    port: int
    log_path: str

    @property
    def base_url(self) -> str:
        return f"http://{LOCAL_HOST}:{self.port}"

    def alive(self) -> bool:
        return process_alive(self.pid, self.start_ticks)


def start_inference_server(
    entry_script: Path,
    model_dir: Path,
    port: int,
    log_path: Path,
    workers: int = SLOT_WORKERS,
    server_settings: Mapping[str, str] | None = None,
) -> ServerProcess:
    """Start a detached inference server (its own session: it outlives the caller) on 127.0.0.1:port,
    with the slot settings the Azure deployment gets too (`server_settings` overrides some, e.g. for a
    benchmark). Returns at once; use `is_live` to wait for it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        **SLOT_SERVER_ENVIRONMENT,
        **(server_settings or {}),
        "AZUREML_MODEL_DIR": str(model_dir),
        "AML_APP_ROOT": str(entry_script.parent),
        "PYTHONUNBUFFERED": "1",
    }
    # The scorer runs in this interpreter's venv; no stray tracking/run settings leak into it.
    for var in ("MLFLOW_RUN_ID", "SEPERATE_HEALTH_ENDPOINT", "AZUREML_ENTRY_SCRIPT"):
        env.pop(var, None)
    command = [
        sys.executable,
        "-m",
        "retrain.local.inference_server",
        "--entry_script",
        str(entry_script),
        "--model_dir",
        str(model_dir),
        "--port",
        str(port),
        "--worker_count",
        str(workers),
    ]
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            command,
            cwd=str(entry_script.parent),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ServerProcess(
        pid=proc.pid, start_ticks=process_start_ticks(proc.pid), port=port, log_path=str(log_path)
    )


def is_live(port: int, timeout: float = 2.0) -> bool:
    """The liveness probe Azure uses: GET / answers 200."""
    try:
        with urllib.request.urlopen(f"http://{LOCAL_HOST}:{port}/", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_until_live(server: ServerProcess, timeout: float = 120.0) -> None:
    """Block until the server answers its liveness probe; RuntimeError with its log tail if it dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_live(server.port):
            return
        if not server.alive():
            raise RuntimeError(f"inference server exited during start-up:\n{tail(Path(server.log_path))}")
        time.sleep(0.25)
    raise RuntimeError(f"inference server not live after {timeout:.0f}s:\n{tail(Path(server.log_path))}")


def stop_inference_server(pid: int | None, start_ticks: int | None = None, timeout: float = 15.0) -> bool:
    """SIGTERM the server's process group (gunicorn finishes in-flight requests), SIGKILL after timeout."""
    return stop_process_group(pid, start_ticks, timeout=timeout)


def _serve_on_localhost() -> None:
    from azureml_inference_server_http import amlserver

    # amlserver passes its module-level DEFAULT_HOST (0.0.0.0) to gunicorn's bind; keep it local.
    amlserver.DEFAULT_HOST = LOCAL_HOST  # type: ignore[attr-defined]
    sys.argv[0] = "azmlinfsrv"
    amlserver.run()


if __name__ == "__main__":
    _serve_on_localhost()
