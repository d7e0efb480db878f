"""End to end, offline, real processes on 127.0.0.1: the CLI commands besides `run`.

One `retrain run` (bundled sample, ridge trainer) makes the state dir that `status`, `predict` and `ui` are
tried on. `serve` resuming an orchestration gets its own state dir: the host is SIGKILLed while the
cycle waits for its training job, started again on the same state dir and port, and must finish the
cycle with the job having run once. Every process started here is stopped by its PID in teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from retrain import naming
from retrain.host_client import http_json, with_code
from retrain.local.processes import process_alive, tail
from tests.helpers import (
    CLOSES,
    background,
    child_pids,
    free_port,
    group_exists,
    job_runners,
    kill_leftovers,
    offline_env,
    run_retrain,
    score,
    slot_processes,
    wait_for,
)

# The cycle's steps; the deployment itself is its endpoint's rollout's (retrain/rollout.py).
STEPS = ("guard", "batches", "await_rollout")  # a fleet of one's


# ----------------------------------------------------------------------------------- the shared cycle


@dataclass(frozen=True)
class Cycle:
    state_dir: Path
    cwd: Path
    env: dict[str, str]
    summary: dict[str, Any]


@pytest.fixture(scope="module")
def cycle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cycle]:
    """One real `retrain run` on the bundled sample (the ridge trainer: what these commands do does not
    depend on the family, and the LSTM's runs are test_full_cycle's): a deployed model and a finished cycle."""
    cwd = tmp_path_factory.mktemp("cli")
    state_dir = cwd / "state"
    env = offline_env(RETRAIN_TRAINER="ridge")
    args = ["run", "--ticker", "MSFT", "--source", "sample", "--lookback-days", "1500"]
    try:
        run = run_retrain([*args, "--state-dir", str(state_dir)], env, cwd, timeout=900)
        assert run.returncode == 0, run.stderr[-3000:]
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        assert summary["tickers"]["MSFT"]["status"] == "deployed", summary
        yield Cycle(state_dir, cwd, env, summary)
    finally:
        kill_leftovers(state_dir)


# ------------------------------------------------------------------------------------------- status


def test_status_lists_the_instances_and_shows_one_with_its_steps(cycle: Cycle):
    instance_id = cycle.summary["instance_id"]

    listed = run_retrain(["status", "--state-dir", str(cycle.state_dir)], cycle.env, cycle.cwd)
    assert listed.returncode == 0, listed.stderr
    lines = [line.split() for line in listed.stdout.splitlines() if line.strip()]
    # One cycle ran on this state dir, and its endpoint's rollout (one instance id per iteration).
    cycles = [line for line in lines if not line[0].startswith("rollout-")]
    batch = naming.batch_instance_id(instance_id, 0)
    assert [line[:3] for line in cycles] == [[instance_id, "Completed", "done"], [batch, "Completed", "done"]]
    rollouts = [line[0] for line in lines if line[0].startswith("rollout-fleet-models-")]
    assert rollouts and len(rollouts) + 2 == len(lines), listed.stdout

    shown = run_retrain(["status", instance_id, "--state-dir", str(cycle.state_dir)], cycle.env, cycle.cwd)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["instance_id"] == instance_id and status["runtime_status"] == "Completed"
    assert status["step"] == "done" and status["output"]["tickers"]["MSFT"]["status"] == "deployed"
    names = [step["step"] for step in status["steps"]]
    assert [s for s in names if s in STEPS] == list(STEPS), names  # in the order they ran
    assert all(isinstance(step["seconds"], float | int) for step in status["steps"]), status["steps"]
    assert status["output"]["batches"] == cycle.summary["batches"]
    msft = cycle.summary["tickers"]["MSFT"]
    assert status["output"]["tickers"]["MSFT"]["model_version"] == msft["model_version"]
    assert status["output"]["tickers"]["MSFT"]["rollout"] == msft["rollout"] in rollouts


def test_status_of_an_unknown_instance_fails_with_a_clear_message(cycle: Cycle):
    result = run_retrain(
        ["status", "retrain-msft-nope", "--state-dir", str(cycle.state_dir)], cycle.env, cycle.cwd
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "no orchestration 'retrain-msft-nope'" in result.stderr and str(cycle.state_dir) in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------------------------- predict


def test_predict_without_serve_says_to_start_serve(cycle: Cycle):
    scoring_uri = cycle.summary["prediction"]["scoring_uri"]
    with pytest.raises(OSError):  # `run` stopped what it started: nothing serves the URL now
        http_json("POST", scoring_uri, {"close": CLOSES}, timeout=5)

    result = run_retrain(
        ["predict", "--ticker", "MSFT", "--state-dir", str(cycle.state_dir)], cycle.env, cycle.cwd
    )
    assert result.returncode == 1 and result.stdout == ""
    assert scoring_uri in result.stderr and "start `retrain serve` on this state dir" in result.stderr
    assert "Traceback" not in result.stderr


def test_predict_rejects_bad_tickers_and_tickers_without_endpoint(cycle: Cycle):
    bad = run_retrain(
        ["predict", "--ticker", "NOT A TICKER", "--state-dir", str(cycle.state_dir)], cycle.env, cycle.cwd
    )
    assert bad.returncode == 2 and "invalid ticker 'NOT A TICKER'" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr

    other = run_retrain(
        ["predict", "--ticker", "aapl", "--state-dir", str(cycle.state_dir)], cycle.env, cycle.cwd
    )
    assert other.returncode == 1, other.stderr
    assert "no endpoint serves AAPL yet; run `retrain run --ticker AAPL` first" in other.stderr


def test_predict_prints_the_forecast_through_the_stable_url_under_serve(cycle: Cycle):
    scoring_uri = cycle.summary["prediction"]["scoring_uri"]
    serve_args = ["serve", "--port", str(free_port()), "--state-dir", str(cycle.state_dir)]
    with background(serve_args, cycle.env, cycle.cwd, cycle.cwd / "serve-predict.log") as serve:
        wait_for("the scoring URL under `retrain serve`", lambda: score(scoring_uri), 180, serve.problem)

        result = run_retrain(
            ["predict", "--ticker", "MSFT", "--state-dir", str(cycle.state_dir)], cycle.env, cycle.cwd
        )
        assert result.returncode == 0, result.stderr[-3000:]
        answer = json.loads(result.stdout)
    assert serve.process.returncode == 0, tail(serve.log)  # SIGTERM: a clean stop
    # The endpoint outlives the host, as in Azure: its router and slots keep serving the stable URL,
    # and the next `serve` adopts them (a graceful restart fails no request); Ctrl-C stops them.
    assert all(process_alive(p, t) for p, t in slot_processes(cycle.state_dir))
    assert score(scoring_uri) is not None
    with background(serve_args, cycle.env, cycle.cwd, cycle.cwd / "serve-again.log") as again:
        ready = lambda: True if "Ctrl-C to stop" in tail(again.log) else None  # noqa: E731
        wait_for("`retrain serve` again", ready, 180, again.problem)
        assert score(scoring_uri) is not None
        adopted = slot_processes(cycle.state_dir)
        os.kill(again.process.pid, signal.SIGINT)
        again.process.wait(timeout=120)
    assert not any(process_alive(p, t) for p, t in adopted)  # Ctrl-C: the endpoint stopped too

    assert answer["ticker"] == "MSFT" and answer["scoring_uri"] == scoring_uri
    assert answer["model"] == {"name": "msft-forecaster", "version": "1", "window": 20}
    # The same model on the same latest closes as `run` scored right after deploying.
    assert answer["last_close"] == pytest.approx(cycle.summary["prediction"]["last_close"])
    assert len(answer["forecast"]) == 1
    assert answer["forecast"][0] == pytest.approx(cycle.summary["prediction"]["forecast"], rel=1e-6)


# ------------------------------------------------------------------------------------------- ui


def _listening_addresses(port: int) -> set[str]:
    """The local addresses with a TCP socket LISTENing on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                address, hex_port = fields[1].rsplit(":", 1)
                if fields[3] == "0A" and int(hex_port, 16) == port:
                    found.add(address)
    return found


def test_ui_serves_the_state_dirs_store_on_localhost_and_stops_by_pid(cycle: Cycle):
    port = free_port()
    ui_args = ["ui", "--port", str(port), "--state-dir", str(cycle.state_dir)]
    mlflow_group: int | None = None
    try:
        with background(ui_args, cycle.env, cycle.cwd, cycle.cwd / "ui.log") as ui:
            url = f"http://127.0.0.1:{port}"
            wait_for(
                "GET / of the MLflow UI",
                lambda: http_json("GET", f"{url}/")[0] == 200 or None,
                180,
                ui.problem,
            )
            assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only, no 0.0.0.0 / ::
            code, found = http_json("GET", f"{url}/api/2.0/mlflow/experiments/search?max_results=100")
            assert code == 200, found
            names = {e["name"] for e in found.get("experiments", [])}
            assert naming.FLEET_EXPERIMENT in names, names  # the state dir's store, with the cycle's run
            (mlflow_group,) = child_pids(ui.process.pid)  # the MLflow server: its own process group

            os.kill(ui.process.pid, signal.SIGTERM)  # stopped by PID ...
            assert ui.process.wait(timeout=60) == 0, tail(ui.log)
        assert not group_exists(mlflow_group)  # ... with the server and its workers
        with pytest.raises(OSError):
            http_json("GET", f"{url}/", timeout=5)
    finally:
        if mlflow_group is not None and group_exists(mlflow_group):
            os.killpg(mlflow_group, signal.SIGKILL)


def test_ui_without_a_store_says_to_run_first(tmp_path: Path):
    result = run_retrain(
        ["ui", "--port", str(free_port()), "--state-dir", str(tmp_path / "empty")], offline_env(), tmp_path
    )
    assert result.returncode == 1
    assert "no MLflow store" in result.stderr and "run `retrain run` first" in result.stderr


# ------------------------------------------------------------------------------------------- serve resumes


def _readable_status(status_url: str) -> dict[str, Any] | None:
    code, status = http_json("GET", status_url)  # GET /api/retrain/{id}: 404 until the instance is visible
    return status if code == 200 and isinstance(status, dict) else None


def _job_event(job_dir: Path) -> dict[str, Any] | None:
    """What the job runner recorded about delivering its Event Grid event, once it tried."""
    status = json.loads((job_dir / "status.json").read_text())
    return status.get("event")


@pytest.mark.parametrize(
    "restart",
    [
        "while_the_job_runs",  # the job's event reaches the new host, or the poll finds the job
        "after_the_job_ended_while_the_host_was_down",  # the runner keeps retrying its event
    ],
)
def test_serve_resumes_a_cycle_whose_host_was_killed_while_it_waited_for_the_job(
    tmp_path: Path, restart: str
):
    state_dir = tmp_path / "state"
    env = offline_env(
        RETRAIN_JOB_POLL_MINUTES="0.05"
    )  # 3 s: the poll covers an event sent while the host was down
    port = free_port()
    serve_args = ["serve", "--port", str(port), "--state-dir", str(state_dir)]
    base = f"http://127.0.0.1:{port}"
    try:
        with background(serve_args, env, tmp_path, tmp_path / "serve-1.log") as first:
            keys_file = state_dir / "host" / "keys.json"
            wait_for(
                "the host",
                lambda: http_json("GET", f"{base}/")[0] if keys_file.is_file() else None,
                120,
                first.problem,
            )
            key = json.loads(keys_file.read_text())["functionKey"]
            code, started = http_json(
                "POST",
                f"{base}/api/retrain?code={urllib.parse.quote(key)}",
                {"ticker": "MSFT", "source": "sample", "trainer": "ridge"},
            )
            assert code == 202, started
            status_url, instance_id = with_code(started["statusQueryGetUri"], key), started["id"]

            def waiting_for_job() -> dict[str, Any] | None:
                status = _readable_status(status_url)
                if status and status["runtime_status"] in ("Completed", "Failed", "Terminated"):
                    pytest.fail(f"the cycle ended before it waited for its job: {status}")
                batch_job = state_dir / "jobs" / naming.job_name(naming.batch_instance_id(instance_id, 0))
                return status if status and (batch_job / "status.json").is_file() else None

            waiting = wait_for("the wait_for_job step", waiting_for_job, 180, first.problem)
            os.killpg(first.process.pid, signal.SIGKILL)  # the host dies mid-cycle, without a goodbye
            first.process.wait(timeout=30)

        assert waiting["fleet"] is True
        job_name = naming.job_name(naming.batch_instance_id(instance_id, 0))
        job_dir = state_dir / "jobs" / job_name
        job_status = json.loads((job_dir / "status.json").read_text())
        assert job_status["status"] in ("Queued", "Running", "Completed"), job_status  # it outlived the host
        if restart == "after_the_job_ended_while_the_host_was_down":
            event = wait_for(
                "the job to end and try its event", lambda: _job_event(job_dir), 300, lambda: None
            )
            assert event["delivered"] is None, event  # nobody listened: retrying, as Event Grid does

        with background(serve_args, env, tmp_path, tmp_path / "serve-2.log") as second:

            def finished() -> dict[str, Any] | None:
                status = _readable_status(status_url)
                terminal = ("Completed", "Failed", "Terminated", "Canceled")
                return status if status and status["runtime_status"] in terminal else None

            status = wait_for("the resumed cycle to finish", finished, 600, second.problem)
            assert status["runtime_status"] == "Completed", json.dumps(status, indent=2)[-3000:]
            output, custom = status["output"], status  # the readable status carries step and ids
            assert output["tickers"]["MSFT"]["status"] == "deployed", output
            assert output["batches"][0]["job_name"] == job_name and custom["batches_done"] == 1, output
            if restart == "after_the_job_ended_while_the_host_was_down":
                # the runner's retry reached the restarted host (the poll may have been quicker)
                delivered = wait_for(
                    "the retried event",
                    lambda: (_job_event(job_dir) or {}).get("delivered"),
                    90,
                    lambda: None,
                )
                assert delivered is True
            answer = score(output["endpoints"]["fleet-models"])  # the stable URL serves the resumed model
            assert answer is not None and answer["model"]["name"] == "msft-forecaster", answer
            assert answer["model"]["version"] == "1" and len(answer["forecast"]) == 1
        assert second.process.returncode == 0, tail(second.log)

        # The training job ran once: one job, one launch, one pass through Running, one MLflow run,
        # one registered model version.
        assert [p.name for p in (state_dir / "jobs").iterdir()] == [job_name]
        history = [h["status"] for h in json.loads((job_dir / "status.json").read_text())["history"]]
        assert history == ["Queued", "Running", "Completed"], history
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{state_dir / 'mlflow' / 'mlflow.db'}")
        experiment = client.get_experiment_by_name(naming.FLEET_EXPERIMENT)
        runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.job_name = '{job_name}'")
        assert len(runs) == 1 and runs[0].info.status == "FINISHED", runs
        versions = client.search_model_versions("name = 'msft-forecaster'")
        assert [str(v.version) for v in versions] == ["1"]
    finally:
        kill_leftovers(state_dir)
    assert not any(process_alive(p, t) for p, t in slot_processes(state_dir) + job_runners(state_dir))
