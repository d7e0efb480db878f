"""The one shared helper module of the test suite (fixtures live in the conftest.py of each tier):
driving a host through its HTTP API with `retrain.host_client`, Event Grid payloads shaped like Azure's,
a webhook receiver on 127.0.0.1, and the process helpers of the end-to-end tests (every process started
is stopped by its PID)."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from functions_host.host import HOST_URL_SETTING, LocalHost
from retrain.host_client import HostClient, http_json
from retrain.local.processes import free_port, process_alive, tail

if TYPE_CHECKING:
    from tests.integration.memory_platform import MemoryPlatform

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
CLOSES = [float(c) for c in range(100, 130)]


# ------------------------------------------------------------------------ the HTTP test app's host

HTTP_APP = REPO / "tests" / "http_app" / "function_app.py"
# the test app's local.settings.json Values
SETTINGS_ADDED = ("FUNCTIONS_WORKER_RUNTIME", "HTTP_APP_SCHEDULE")


def http_app_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment of tests/http_app (its log file, returned); whatever the host adds is undone after."""
    log = tmp_path / "app-log.jsonl"
    monkeypatch.setenv("HTTP_APP_LOG", str(log))
    for name in (*SETTINGS_ADDED, "RETRAIN_FUNCTION_KEY", "RETRAIN_SYSTEM_KEY", HOST_URL_SETTING):
        monkeypatch.setenv(name, "x")  # recorded, so that whatever the host adds is undone after the test
        monkeypatch.delenv(name)
    return log


@contextlib.contextmanager
def running_http_app(tmp_path: Path) -> Iterator[LocalHost]:
    """A LocalHost serving tests/http_app on 127.0.0.1 (its start-up listing in `startup_output`)."""
    out = io.StringIO()
    local = LocalHost(HTTP_APP, tmp_path / "state", out=out)
    local.start()
    local.startup_output = out.getvalue()  # type: ignore[attr-defined]
    try:
        yield local
    finally:
        local.stop()


# ------------------------------------------------------------------------------- a retraining cycle


def start(host: LocalHost, body: Any = None) -> tuple[int, Any]:
    return HostClient(host.url, host.function_key).start_cycle(body)


def wait(host: LocalHost, instance_id: str, timeout: float = 60) -> dict[str, Any]:
    return HostClient(host.url, host.function_key).follow_cycle(instance_id, poll_s=0.2, timeout_s=timeout)


def run_cycle(host: LocalHost, body: Any = None) -> dict[str, Any]:
    """POST /api/retrain with `body` (a `{"ticker"}` body starts a fleet of one) and wait for it to end."""
    code, answer = start(host, body)
    assert code == 202, answer
    return wait(host, answer["id"])


def outcome(status: dict[str, Any], ticker: str = "MSFT") -> dict[str, Any]:
    """One ticker's outcome in a fleet's status (`output.tickers`): status, model_version, gate, error, ..."""
    return ((status.get("output") or {}).get("tickers") or {}).get(ticker) or {}


def batch_status(host: LocalHost, fleet_id: str, index: int = 0) -> dict[str, Any]:
    """The custom status of a fleet's batch sub-orchestration (its steps and `ids`: job_name, job_signal)."""
    from retrain import naming

    status = host.engine.get_status(naming.batch_instance_id(fleet_id, index), show_input=False)
    return (status or {}).get("customStatus") or {}


def calls(memory: MemoryPlatform, name: str) -> list[Any]:
    return [arg for call, arg in memory.calls if call == name]


# ------------------------------------------------------------------------------ synthetic price CSVs


def write_price_csv(path: Path, closes: Any) -> None:
    """A CSV of daily prices (Date, Open, High, Low, Close, Volume) ending on 2024-12-31 with `closes`."""
    import numpy as np
    import pandas as pd

    closes = np.asarray(closes, dtype=float)
    dates = pd.bdate_range(end="2024-12-31", periods=len(closes))
    pd.DataFrame(
        {"Date": dates.strftime("%Y-%m-%d"), "Open": closes, "High": closes * 1.01, "Low": closes * 0.99}
        | {"Close": closes, "Volume": 1_000_000}
    ).to_csv(path, index=False)


def random_walk(seed: int, days: int = 300) -> Any:
    """Closes of a seeded random walk: a plausible model, whatever the gate says of it."""
    import numpy as np

    returns = np.random.default_rng(seed).normal(0.0003, 0.015, days)
    return 50.0 * np.exp(np.cumsum(returns) - returns[0])


# --------------------------------------------------------------------------------- Event Grid payloads


WORKSPACE = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/"
    "Microsoft.MachineLearningServices/workspaces/ws"
)


def grid_event(
    job: str, status: str, tags: dict[str, str], event_type: str = "RunStatusChanged"
) -> dict[str, Any]:
    return {
        "id": f"id-{job}-{status}",
        "topic": WORKSPACE,
        "subject": f"experiments/e1/runs/{job}",
        "eventType": f"Microsoft.MachineLearningServices.{event_type}",
        "eventTime": "2026-11-24T23:00:00Z",
        "data": {
            "experimentId": "e1",
            "experimentName": "retrain-msft",
            "runId": job,
            "runType": "azureml.scriptrun",
            "runTags": tags,
            "runProperties": {},
            "runStatus": status,
        },
        "dataVersion": "2",
        "metadataVersion": "1",
    }


def cloud_event(job: str, tags: dict[str, str]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"ce-{job}",
        "source": WORKSPACE,
        "subject": f"experiments/e1/runs/{job}",
        "type": "Microsoft.MachineLearningServices.RunCompleted",
        "time": "2026-11-24T23:00:00Z",
        "data": {
            "experimentId": "e1",
            "experimentName": "retrain-msft",
            "runId": job,
            "runType": "azureml.scriptrun",
            "runTags": tags,
            "runProperties": {},
        },
    }


def deliver(host: LocalHost, payload: Any) -> int:
    """POST an Event Grid notification to the host's `job_events` webhook; the status code."""
    code, _ = http_json(
        "POST", host.event_grid_url("job_events"), payload, headers={"aeg-event-type": "Notification"}
    )
    return code


# -------------------------------------------------------------------------------- a webhook receiver


class Receiver:
    """A tiny webhook on 127.0.0.1 that answers the queued status codes, then 200."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": json.loads(body),
                    }
                )
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ----------------------------------------------------------------------------- processes (end to end)


def offline_env(**extra: str) -> dict[str, str]:
    """The caller's environment without retrain/MLflow settings; the sample source, so nothing that
    starts a cycle (a timer included) can reach the internet."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETRAIN_", "MLFLOW_"))}
    env["RETRAIN_SOURCE"] = "sample"
    env["RETRAIN_SMOKE_MAX_LATENCY_MS"] = "10000"  # a busy machine: the bound is not what is tested here
    env.update(extra)
    return env


def run_retrain(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "retrain", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


def check_trainer_cli(
    folder: Path, *params: str, cwd: Path, champion: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`retrain check-trainer <folder>` as a user runs it (its own process), with `--param`s and a champion."""
    command = [sys.executable, "-m", "retrain", "check-trainer", str(folder)]
    if champion is not None:
        command += ["--champion-model", str(champion)]
    for param in params:
        command += ["--param", param]
    return subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=cwd)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, alive: Callable[[], str | None]) -> T:
    """Poll `probe` until it returns something; `alive` returns a reason to stop early (a process died)."""
    deadline = time.monotonic() + timeout
    while True:
        problem = alive()
        assert problem is None, f"while waiting for {what}: {problem}"
        try:
            found = probe()
        except OSError:  # not listening (yet)
            found = None
        if found is not None:
            return found
        assert time.monotonic() < deadline, f"gave up waiting for {what} after {timeout:.0f}s"
        time.sleep(0.2)


def child_pids(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
                kids.append(int(stat.parent.name))
    return kids


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Background:
    process: subprocess.Popen
    log: Path

    def problem(self) -> str | None:
        if self.process.poll() is not None:
            return f"exited with {self.process.returncode}:\n{tail(self.log, 4000)}"
        return None


@contextlib.contextmanager
def background(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> Iterator[Background]:
    """`retrain <args>` in its own session; stopped by its PID (SIGTERM, then SIGKILL) when done."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "retrain", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    try:
        yield Background(process, log)
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen, timeout: float = 60) -> None:
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # its session: the leader is not reaped yet
        process.wait()


def stop_group(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the process group led by `pid` (started with `start_new_session=True`), wait until every
    member is gone, not only the leader, SIGKILL whatever is left after `timeout`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not group_exists(pid):
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap our direct child so it does not linger as a zombie
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


@dataclass(frozen=True)
class MlflowServe:
    port: int
    pid: int  # the leader of its process group


@contextlib.contextmanager
def mlflow_models_serve(
    model_dir: Path, log_path: Path, extra_env: dict[str, str] | None = None
) -> Iterator[MlflowServe]:
    """`mlflow models serve --env-manager local` of `model_dir` on 127.0.0.1 (one uvicorn worker), in its
    own session; up within 180 s, then stopped by its PID with every process of its group (the tool a user
    would pick instead of the scorer: a test compares answers with it, bench_scoring latencies)."""
    port = free_port()
    env = {**os.environ, **(extra_env or {})}
    # It execs `uvicorn` from PATH: this interpreter's.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir)]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            command,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def pinged() -> bool | None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/ping")
            return conn.getresponse().status == 200 or None
        except http.client.HTTPException:
            return None
        finally:
            conn.close()

    def exited() -> str | None:
        return None if proc.poll() is None else f"exited with {proc.returncode}:\n{tail(log_path, 3000)}"

    try:
        wait_for("mlflow models serve", pinged, 180, exited)
        yield MlflowServe(port, proc.pid)
    finally:
        stop_group(proc.pid)
        proc.wait(timeout=5)


def slot_processes(state_dir: Path) -> list[tuple[int, int | None]]:
    found = []
    for state_file in state_dir.glob("endpoints/*/state.json"):
        state = json.loads(state_file.read_text())
        # A detached router first: it restarts crashed slots, so it goes before them.
        for info in [*([state["router"]] if "router" in state else []), *state.get("slots", {}).values()]:
            found.append((info.get("pid"), info.get("start_ticks")))
    return found


def job_runners(state_dir: Path) -> list[tuple[int, int | None]]:
    found = []
    for runner in state_dir.glob("jobs/*/runner.json"):
        info = json.loads(runner.read_text())
        found.append((info.get("pid"), info.get("start_ticks")))
    return found


def kill_leftovers(state_dir: Path) -> None:
    """Nothing may outlive a test: endpoint slots and job runners lead their own process groups."""
    for pid, ticks in slot_processes(state_dir) + job_runners(state_dir):
        if process_alive(pid, ticks):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while process_alive(pid, ticks) and time.monotonic() < deadline:
                time.sleep(0.05)


def score(scoring_uri: str) -> dict[str, Any] | None:
    code, answer = http_json("POST", scoring_uri, {"close": CLOSES})
    return answer if code == 200 else None


@contextlib.contextmanager
def real_local_host(state_dir: Path) -> Iterator[LocalHost]:
    """The real local host (function_app.py) on the real local platform; the caller sets the environment
    first. Nothing outlives it: the endpoints are stopped, then every slot and job runner left is killed by
    its process group (a trainer held with SIGSTOP ignores SIGTERM)."""
    from retrain import adapters
    from retrain.ports import HostsEndpoints
    from retrain.settings import declared_defaults

    adapters.reset()
    host = LocalHost(
        REPO / "function_app.py",
        state_dir,
        port=0,
        timers=False,
        out=io.StringIO(),
        setting_defaults=declared_defaults(),
    )
    host.start()
    try:
        yield host
    finally:
        try:
            host.stop()
        finally:
            platform = adapters.get_platform()
            if isinstance(platform, HostsEndpoints):
                platform.stop_all(everything=True)
            adapters.reset()
            kill_leftovers(state_dir)


def set_local_ridge_env(monkeypatch: pytest.MonkeyPatch, state_dir: Path, **extra: str) -> None:
    """The environment of a real ridge cycle on the local platform (MSFT, the bundled sample) with its
    state in `state_dir`; `extra` settings win. No key or host URL leaks in from the caller's."""
    env = {
        "RETRAIN_PLATFORM": "local",
        "RETRAIN_STATE_DIR": str(state_dir),
        "RETRAIN_SCHEDULE": "0 0 1 * * Mon",
        "RETRAIN_TICKERS": "MSFT",
        "RETRAIN_SOURCE": "sample",
        "RETRAIN_LOOKBACK_DAYS": "900",
        "RETRAIN_TRAINER": "ridge",
        **extra,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("RETRAIN_FUNCTION_KEY", "RETRAIN_SYSTEM_KEY", "RETRAIN_LOCAL_HOST_URL"):
        monkeypatch.delenv(key, raising=False)
