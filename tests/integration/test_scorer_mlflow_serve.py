"""The served artefact stays a standard MLflow model: `mlflow models serve --env-manager local` loads the
trainer's model (with its numpy path) on 127.0.0.1 and answers what the scorer's fast path answers."""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retrain.local.processes import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCORE_PY = REPO / "scorer" / "score.py"
LOCALHOST = "127.0.0.1"


def _load_score_module():
    spec = importlib.util.spec_from_file_location("scorer_score_mlflow_serve", SCORE_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError):
        conn = http.client.HTTPConnection(LOCALHOST, port, timeout=2)
        try:
            conn.request("GET", "/ping")
            return conn.getresponse().status == 200
        finally:
            conn.close()
    return False


@pytest.fixture(scope="module")
def served(trained_model: Path, tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("mlflow-serve") / "serve.log"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(trained_model / "model")]
    command += ["--env-manager", "local", "-h", LOCALHOST, "-p", str(port), "-w", "1"]
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            command,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while not _answers(port):
            assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "mlflow models serve not up after 180 s"
            time.sleep(0.3)
        yield port
    finally:
        stop_group(proc.pid)
        proc.wait(timeout=5)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)


def stop_group(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the process group (`mlflow models serve` and the uvicorn it starts), wait until every
    member is gone, SIGKILL whatever is left after `timeout`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap our direct child so it does not linger as a zombie
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def test_mlflow_models_serve_answers_as_the_scorers_fast_path(served, trained_model, sample_csv):
    score = _load_score_module()
    loaded = score.load(trained_model / "model", {})
    assert loaded.fast_forecast is not None  # the scorer's numpy path, on this same artefact
    closes = pd.read_csv(sample_csv)["Close"].to_numpy(dtype=float)
    w = loaded.window
    rows = np.stack([closes[-w:], closes[-w - 10 : -10], closes[-w - 300 : -300]])
    columns = [f"c{i}" for i in range(w)]
    body = json.dumps({"dataframe_split": {"columns": columns, "data": rows.tolist()}})
    conn = http.client.HTTPConnection(LOCALHOST, served, timeout=60)
    try:
        conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 200, payload
    from_serve = [p["forecast"] if isinstance(p, dict) else p for p in payload["predictions"]]
    from_scorer = score.score_body(loaded, json.dumps({"instances": rows.tolist()}).encode())["forecast"]
    np.testing.assert_allclose(from_serve, from_scorer, rtol=1e-9, atol=0.0)
