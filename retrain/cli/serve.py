"""`retrain serve` (the local host, its timers and the scoring URLs until Ctrl-C) and `retrain ui` (the
MLflow UI on the state dir's store)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

from retrain.cli.common import (
    CliError,
    add_state_dir,
    open_host,
    prepare_environment,
    restore_endpoints,
    say,
    stop_host,
    stop_host_keep_endpoints,
)
from retrain.ports import HostsEndpoints


def add_commands(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the local host, timer and scoring URL until Ctrl-C")
    serve.add_argument("--port", type=int, default=7071)
    add_state_dir(serve)
    serve.set_defaults(func=cmd_serve)

    ui = sub.add_parser("ui", help="the MLflow UI on the state dir's store (127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000)
    add_state_dir(ui)
    ui.set_defaults(func=cmd_ui)


def cmd_serve(args: argparse.Namespace) -> int:
    state_dir = prepare_environment(args.state_dir)
    from functions_host.host import HostAlreadyRunning

    try:  # the host first: its lock says whether the endpoint slots are ours to restore
        host = open_host(state_dir, args.port, timers=True)
    except HostAlreadyRunning as running:
        raise CliError(
            f"a host already runs on state dir {state_dir}: {running.url or '(still starting)'} "
            f"(pid {running.pid}); use it, or stop it first",
            1,
        ) from running
    try:
        from retrain.adapters import get_platform

        platform = get_platform()
        if isinstance(
            platform, HostsEndpoints
        ):  # the scoring URLs are served by processes that outlive this one
            platform.detach_routers()
        restore_endpoints(wait=True)  # ready means the restored slots answer
    except BaseException:
        stop_host(host)
        raise
    stop: dict[str, int | None] = {"signal": None}

    def _stop(signum: int, frame: Any) -> None:
        stop["signal"] = signum

    signal.signal(signal.SIGTERM, _stop)
    # Ctrl-C (SIGINT) handled here too, not left to KeyboardInterrupt: a process started in the background
    # of a non-interactive shell inherits SIGINT ignored, and then Ctrl-C (or `kill -INT`) did nothing.
    signal.signal(signal.SIGINT, _stop)
    try:
        say(f"retrain serve: host {host.url} (state {state_dir}); Ctrl-C to stop")
        while stop["signal"] is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        if stop["signal"] == signal.SIGTERM:
            # A service manager's stop or restart: the endpoints (their routers and slots) outlive the
            # host, as an Azure endpoint outlives the Function App; the next `serve` adopts them, so the
            # scoring URL never stops answering.
            say("retrain serve: stopping; the endpoints keep serving (Ctrl-C stops them too)")
            stop_host_keep_endpoints(host)
        else:
            say("retrain serve: stopping")
            stop_host(host)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    state_dir = prepare_environment(args.state_dir)
    store = state_dir / "mlflow" / "mlflow.db"
    if not store.exists():
        raise CliError(f"no MLflow store at {store}; run `retrain run` first", 1)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        f"sqlite:///{store}",
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
    ]
    # One worker and no job consumers: a viewer for one person, not a shared tracking server.
    command += ["--workers", "1"]
    env = {**os.environ}
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    say(f"MLflow UI on http://127.0.0.1:{args.port} (Ctrl-C to stop)")
    # Its own process group (the server runs uvicorn in child processes), stopped as a whole on
    # Ctrl-C or SIGTERM to this process, so stopping `retrain ui` by its PID leaves nothing behind.
    process = subprocess.Popen(command, env=env, start_new_session=True)

    def _interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop_process_group(process)


def _stop_process_group(process: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    """SIGTERM the child's process group, SIGKILL what is left after `timeout`; returns when it is empty."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while True:
        process.poll()  # reap the leader, so an empty group is seen as gone
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return
        time.sleep(0.1)
