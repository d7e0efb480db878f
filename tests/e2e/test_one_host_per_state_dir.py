"""One local Functions host per state dir.

A host holds an exclusive lock on `<state>/host/host.lock` for its life and records where it listens in
`<state>/host/host.json`. A second host on the same state dir is refused (in-process: `HostAlreadyRunning`;
`retrain serve`: a non-zero exit naming the running host), and `retrain run` sends its cycle through the
running host instead of starting its own scheduler, leaving the endpoint slots serving.
Real processes on 127.0.0.1, stopped by their PID.
"""

from __future__ import annotations

import io
import json
import os
import urllib.parse
from pathlib import Path

import pytest

from functions_host.host import HostAlreadyRunning, LocalHost, host_info_path, running_host
from retrain.host_client import http_json
from retrain.local.processes import tail
from retrain.settings import declared_defaults
from tests.helpers import (
    background,
    free_port,
    kill_leftovers,
    offline_env,
    run_retrain,
    score,
    wait_for,
)

APP = Path(__file__).resolve().parents[1] / "http_app" / "function_app.py"


# ------------------------------------------------------------------------------------------- in-process


def test_a_second_host_on_the_same_state_dir_raises_and_names_the_first(tmp_path: Path):
    state = tmp_path / "state"
    first = LocalHost(
        APP, state, out=io.StringIO(), timers=False, environ={}, setting_defaults=declared_defaults()
    )
    first.start()
    try:
        recorded = json.loads(host_info_path(state).read_text())
        assert recorded == {"pid": os.getpid(), "url": first.url, "port": first.port}
        assert running_host(state) == recorded

        second = LocalHost(
            APP, state, out=io.StringIO(), timers=False, environ={}, setting_defaults=declared_defaults()
        )
        with pytest.raises(HostAlreadyRunning) as raised:
            second.start()
        assert raised.value.url == first.url and raised.value.pid == os.getpid()
        assert first.url in str(raised.value) and str(state.resolve()) in str(raised.value)
        assert not second.started
        assert http_json("GET", f"{first.url}/")[0] == 200  # the first host is untouched
    finally:
        first.stop()

    assert running_host(state) is None  # stop released the state dir and removed the record
    assert not host_info_path(state).exists()
    again = LocalHost(
        APP, state, out=io.StringIO(), timers=False, environ={}, setting_defaults=declared_defaults()
    )
    again.start()
    try:
        assert running_host(state)["url"] == again.url
    finally:
        again.stop()


def test_hosts_on_different_state_dirs_run_side_by_side(tmp_path: Path):
    with (
        LocalHost(
            APP,
            tmp_path / "a",
            out=io.StringIO(),
            timers=False,
            environ={},
            setting_defaults=declared_defaults(),
        ) as a,
        LocalHost(
            APP,
            tmp_path / "b",
            out=io.StringIO(),
            timers=False,
            environ={},
            setting_defaults=declared_defaults(),
        ) as b,
    ):
        assert a.url != b.url
        assert running_host(tmp_path / "a")["url"] == a.url
        assert running_host(tmp_path / "b")["url"] == b.url


# ------------------------------------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_run_goes_through_the_running_serve_host_and_a_second_serve_is_refused(tmp_path: Path):
    state_dir = tmp_path / "state"
    env = offline_env()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve_args = ["serve", "--port", str(port), "--state-dir", str(state_dir)]
    try:
        with background(serve_args, env, tmp_path, tmp_path / "serve.log") as serve:
            wait_for(
                "the serve host",
                lambda: http_json("GET", f"{base}/")[0] if host_info_path(state_dir).is_file() else None,
                120,
                serve.problem,
            )
            assert running_host(state_dir) == {"pid": serve.process.pid, "url": base, "port": port}

            run = run_retrain(
                [
                    "run",
                    "--ticker",
                    "MSFT",
                    "--source",
                    "sample",
                    "--max-epochs",
                    "2",
                    "--lookback-days",
                    "1500",
                    "--state-dir",
                    str(state_dir),
                ],
                env,
                tmp_path,
                timeout=900,
            )
            assert run.returncode == 0, run.stderr[-3000:]
            assert f"using the running host at {base}" in run.stderr, run.stderr[-3000:]
            summary = json.loads(run.stdout.strip().splitlines()[-1])  # a fleet of one's outcome
            assert summary["tickers"]["MSFT"]["status"] == "deployed", summary
            assert serve.problem() is None

            # The cycle ran on the serve host's scheduler: that host knows the instance, finished.
            key = json.loads((state_dir / "host" / "keys.json").read_text())["functionKey"]
            instance = urllib.parse.quote(summary["instance_id"])
            code, status = http_json("GET", f"{base}/api/retrain/{instance}?code={urllib.parse.quote(key)}")
            assert code == 200 and status["runtime_status"] == "Completed", status

            # `run` stopped no slot: the stable scoring URL still answers with the new model.
            answer = score(summary["prediction"]["scoring_uri"])
            assert answer is not None, tail(serve.log)
            assert answer["model"]["name"] == "msft-forecaster" and len(answer["forecast"]) == 1

            second = run_retrain(
                serve_args[:1] + ["--port", str(free_port()), *serve_args[3:]], env, tmp_path
            )
            assert second.returncode != 0
            assert base in second.stderr and f"pid {serve.process.pid}" in second.stderr, second.stderr
            assert "Traceback" not in second.stderr
            assert (
                score(summary["prediction"]["scoring_uri"]) is not None
            )  # the refused serve touched nothing
            assert serve.problem() is None
        assert serve.process.returncode == 0, tail(serve.log)
        assert running_host(state_dir, wait_s=0) is None  # the lock went with the serve process
    finally:
        kill_leftovers(state_dir)
