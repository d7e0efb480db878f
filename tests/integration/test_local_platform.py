"""The local platform for real: data assets, a real training job through the detached runner (its
Event Grid event POSTed to a webhook receiver on 127.0.0.1 standing in for the local host), a failing
job, a job whose runner dies, and the MLflow registry with the champion alias."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest

from functions_host.keys import load_or_create_keys
from retrain import trainers
from retrain.local.platform import LocalPlatform
from retrain.local.processes import process_alive, read_json, stop_process_group
from retrain.ports import DataAsset, JobStatus, PlatformError, TrainingRequest
from retrain.vocabulary import TAG_EVALUATION_FIT_END, TAG_FITTED_DATA_END
from tests.helpers import Receiver

pytestmark = pytest.mark.slow
MODEL = "msft-forecaster"
REPO = Path(__file__).resolve().parents[2]
QUICK = {"max_epochs": 2}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver([])
    yield r
    r.stop()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[LocalPlatform]:
    state = tmp_path_factory.mktemp("state")
    load_or_create_keys(state, environ={})  # the host's key file, as the local host writes it
    p = LocalPlatform(state, host_url=receiver.url)
    yield p
    for runner in (state / "jobs").glob("*/runner.json"):  # never leave a job running
        info = read_json(runner)
        stop_process_group(info["pid"], info["start_ticks"])
    p.stop_all()


@pytest.fixture(scope="module")
def asset(platform: LocalPlatform, sample_csv: Path) -> DataAsset:
    return platform.register_data("msft-daily", "sample-v1", str(sample_csv), {"ticker": "MSFT"})


def _request(job: str, asset: DataAsset, champion: dict | None = None, **hp: int) -> TrainingRequest:
    return TrainingRequest(
        job_name=job,
        experiment_name="retrain-msft",
        ticker="MSFT",
        data=asset.to_dict(),
        instance_id=f"inst-{job}",
        code_version="0.1.0+test",
        champion=champion,
        hyperparameters={**QUICK, **hp},
    )


def _wait(platform: LocalPlatform, job: str, timeout: float = 600) -> JobStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = platform.get_job(job)
        if status.terminal:
            return status
        time.sleep(0.5)
    raise AssertionError(f"job {job} not finished after {timeout}s")


def _events_for(receiver: Receiver, job: str, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in receiver.requests if r["body"][0]["data"]["runId"] == job]
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no event for {job}; got {[r['body'] for r in receiver.requests]}")


@pytest.fixture(scope="module")
def completed_job(platform: LocalPlatform, asset: DataAsset) -> str:
    job = "retrain-msft-t1-train"
    assert platform.submit_training(_request(job, asset)) == job
    assert platform.submit_training(_request(job, asset)) == job  # a second submit is a no-op
    assert _wait(platform, job).status == "Completed", (
        platform.state_dir / "jobs" / job / "std_log.txt"
    ).read_text()[-3000:]
    return job


def test_job_runs_detached_and_records_azure_statuses(platform: LocalPlatform, completed_job: str) -> None:
    job_dir = platform.state_dir / "jobs" / completed_job
    status = read_json(job_dir / "status.json")
    assert [h["status"] for h in status["history"]] == ["Queued", "Running", "Completed"]
    assert status["exit_code"] == 0
    runner = read_json(job_dir / "runner.json")
    assert status["runner_pid"] == runner["pid"]
    deadline = time.monotonic() + 30  # after Completed the runner still delivers the event, then exits
    while process_alive(runner["pid"], runner["start_ticks"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_alive(runner["pid"], runner["start_ticks"])
    assert (job_dir / "std_log.txt").stat().st_size > 0
    assert (job_dir / "outputs" / "model" / "MLmodel").is_file()
    assert (
        len(list((platform.state_dir / "jobs").iterdir())) >= 1 and not (job_dir / "runner.json.tmp").exists()
    )


def test_completed_job_posts_run_completed_with_its_tags(
    platform: LocalPlatform, receiver: Receiver, completed_job: str, asset: DataAsset
) -> None:
    requests = _events_for(receiver, completed_job)
    assert len(requests) == 1  # submitted twice, ran once
    request = requests[0]
    url = urlparse(request["path"])
    assert url.path == "/runtime/webhooks/eventgrid"
    assert parse_qs(url.query) == {
        "functionName": ["job_events"],
        "code": [load_or_create_keys(platform.state_dir).extension_key("eventgrid_extension")],
    }
    assert request["headers"]["aeg-event-type"] == "Notification"
    [event] = request["body"]
    assert event["eventType"] == "Microsoft.MachineLearningServices.RunCompleted"
    assert event["subject"] == f"experiments/{event['data']['experimentId']}/runs/{completed_job}"
    assert event["topic"].startswith("/subscriptions/") and event["dataVersion"] == "2"
    tags = event["data"]["runTags"]
    assert tags["orchestration_instance_id"] == f"inst-{completed_job}"
    assert (tags["ticker"], tags["data_asset"], tags["data_version"]) == ("MSFT", asset.name, asset.version)
    assert event["data"]["experimentName"] == "retrain-msft"
    recorded = read_json(platform.state_dir / "jobs" / completed_job / "status.json")["event"]
    assert recorded["delivered"] is True and recorded["id"] == event["id"]


def test_the_trainer_resumed_the_platforms_mlflow_run(platform: LocalPlatform, completed_job: str) -> None:
    run = platform.client.get_run(platform.job_run_id(completed_job))
    assert run.info.status == "FINISHED" and run.info.run_name == completed_job
    assert run.data.tags["job_name"] == completed_job and run.data.tags["data_asset"] == "msft-daily"
    metrics = platform.get_job_metrics(completed_job)
    assert {"mae", "rmse", "naive_mae", "mae_vs_naive"} <= set(metrics)
    assert all(isinstance(v, float) and v == v for v in metrics.values())
    artifacts = {a.path for a in platform.client.list_artifacts(run.info.run_id)}
    assert "model" in artifacts  # runs:/<run_id>/model resolves
    assert str(platform.artifact_root) in run.info.artifact_uri  # artifacts stay under the state dir


def test_registry_is_idempotent_per_job_and_tracks_the_champion(
    platform: LocalPlatform, completed_job: str, asset: DataAsset, receiver: Receiver
) -> None:
    assert platform.get_champion(MODEL) is None
    lineage = {"data_asset": asset.name, "data_version": asset.version, "code_version": "0.1.0+test"}
    first = platform.register_model(MODEL, completed_job, lineage)
    assert platform.register_model(MODEL, completed_job, lineage) == first
    assert first.tags["job_name"] == completed_job and first.tags["data_version"] == asset.version
    # The fit ends the trainer recorded on its run: the served (refitted) model saw the data end.
    data_end = str(pd.read_csv(asset.uri)["Date"].iloc[-1])[:10]
    assert first.tags[TAG_FITTED_DATA_END] == data_end
    test_days = platform.get_job_test_errors(completed_job)["dates"]
    assert first.tags[TAG_EVALUATION_FIT_END] < test_days[0]
    platform.set_champion(first)
    assert platform.get_champion(MODEL) == first

    # A challenger trained against the champion: the runner hands the champion's model to the trainer.
    challenger_job = "retrain-msft-t2-train"
    platform.submit_training(_request(challenger_job, asset, champion=first.to_dict(), seed=7))
    assert _wait(platform, challenger_job).succeeded
    assert "champion_mae" in platform.get_job_metrics(challenger_job)
    # The per-day test forecasts the gate's significance test reads: with the champion's on the same days.
    errors = platform.get_job_test_errors(challenger_job)
    assert len(errors["champion"]) == len(errors["model"]) == len(errors["dates"]) > 0
    assert platform.get_job_test_errors(completed_job)["champion"] is None
    with pytest.raises(PlatformError, match="no training job"):
        platform.get_job_test_errors("retrain-msft-never-train")
    second = platform.register_model(MODEL, challenger_job, lineage)
    assert int(second.version) == int(first.version) + 1
    platform.set_champion(second)
    assert platform.get_champion(MODEL).version == second.version
    with pytest.raises(PlatformError, match="not registered"):
        platform.set_champion(type(first)(name=MODEL, version="99"))


def test_failing_job_reports_failed_with_the_reason_and_posts_run_status_changed(
    platform: LocalPlatform, receiver: Receiver, sample_csv: Path, tmp_path: Path
) -> None:
    short = tmp_path / "short.csv"
    pd.read_csv(sample_csv).head(30).to_csv(short, index=False)
    asset = platform.register_data("msft-daily", "too-short", str(short), {})
    job = "retrain-msft-bad-train"
    platform.submit_training(_request(job, asset))
    status = _wait(platform, job, timeout=300)
    assert status.status == "Failed"
    assert status.error and "trainer exited with code" in status.error and len(status.error) > 30
    [request] = _events_for(receiver, job)
    [event] = request["body"]
    assert event["eventType"] == "Microsoft.MachineLearningServices.RunStatusChanged"
    assert event["data"]["runStatus"] == "Failed"
    assert event["data"]["runTags"]["orchestration_instance_id"] == f"inst-{job}"
    assert platform.client.get_run(platform.job_run_id(job)).info.status == "FAILED"
    with pytest.raises(PlatformError, match="not Completed"):
        platform.register_model(MODEL, job, {})


def test_a_runner_that_dies_is_reported_failed(platform: LocalPlatform, asset: DataAsset) -> None:
    job = "retrain-msft-killed-train"
    platform.submit_training(_request(job, asset, max_epochs=50))
    runner = read_json(platform.state_dir / "jobs" / job / "runner.json")
    deadline = time.monotonic() + 120
    while platform.get_job(job).status != "Running" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stop_process_group(runner["pid"], runner["start_ticks"], timeout=5)  # runner and trainer
    status = platform.get_job(job)
    assert status.status == "Failed" and "stopped without recording an outcome" in (status.error or "")


def test_a_submit_retried_after_its_submitter_died_adopts_the_running_runner(
    platform: LocalPlatform, asset: DataAsset
) -> None:
    """The submitter (the host's activity) died after starting the detached runner and before recording it
    in runner.json; the activity's replay submits again. It must not start a second runner over the same
    job (two trainers on one job's outputs: seen as a history Queued, Running, Queued, Running, Completed,
    Failed when `retrain serve` was SIGKILLed right after the job appeared)."""
    job = "retrain-msft-retried-train"
    request = _request(job, asset, max_epochs=50)
    platform.submit_training(request)
    job_dir = platform.state_dir / "jobs" / job
    first = read_json(job_dir / "runner.json")
    deadline = time.monotonic() + 120
    while not read_json(job_dir / "status.json").get("runner_pid"):
        assert time.monotonic() < deadline, "the runner never recorded itself"
        time.sleep(0.1)
    try:
        (job_dir / "runner.json").unlink()  # the submitter's death: the runner is not on record
        assert platform.submit_training(request) == job
        assert read_json(job_dir / "runner.json")["pid"] == first["pid"]  # adopted, nothing launched
        # A second runner started over the job anyway exits at once and touches nothing.
        before = read_json(job_dir / "status.json")["history"]
        second = subprocess.run(
            [sys.executable, "-m", "retrain.local.jobs", "--job-dir", str(job_dir)],
            cwd=job_dir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 0, second.stderr[-2000:]
        history = read_json(job_dir / "status.json")["history"]
        assert history[: len(before)] == before and "Queued" not in [h["status"] for h in history[1:]]
        assert process_alive(first["pid"], first["start_ticks"])
    finally:
        stop_process_group(first["pid"], first["start_ticks"], timeout=5)


def test_bad_requests_are_refused_before_anything_runs(platform: LocalPlatform, asset: DataAsset) -> None:
    unknown = dataclasses.replace(_request("retrain-msft-x-train", asset), trainer="../../tmp/evil")
    with pytest.raises(
        PlatformError, match=f"unknown trainer '../../tmp/evil'; use one of .*{', '.join(trainers.names())}$"
    ):
        platform.submit_training(unknown)
    with pytest.raises(PlatformError, match="no spaces or quotes"):
        platform.submit_training(_request("retrain-msft-x-train", asset, seed="1; touch /tmp/x"))
    assert not (platform.state_dir / "jobs" / "retrain-msft-x-train").exists()
    with pytest.raises(PlatformError, match="no training job"):
        platform.get_job("never-submitted")
    missing = DataAsset(name="msft-daily", version="nope", uri="/nonexistent.csv")
    with pytest.raises(PlatformError, match="register it before training"):
        platform.submit_training(_request("retrain-msft-y-train", missing))


def test_hyperparameters_reach_the_trainer_generically_and_it_judges_them(
    platform: LocalPlatform, asset: DataAsset, completed_job: str
) -> None:
    spec = read_json(platform.state_dir / "jobs" / completed_job / "job.json")
    assert spec["command"][-2:] == ["--param", "max_epochs=2"]  # the request's, passed through as is
    # The job runs its own copy of the code: the trainer folder with the kit copied in (as in Azure ML).
    code = platform.state_dir / "jobs" / completed_job / "code" / "trainer"
    assert spec["command"][1] == str(code / "train.py") and spec["tags"]["trainer"] == "lstm"
    assert (code / "trainer_kit" / "batch.py").read_bytes() == (
        REPO / "trainer_kit" / "batch.py"
    ).read_bytes()
    # No list of flags in the adapter: a name the trainer does not know is the trainer's to refuse.
    job = "retrain-msft-typo-train"
    platform.submit_training(_request(job, asset, max_epochz=3))
    status = _wait(platform, job, timeout=300)
    assert status.status == "Failed" and "max_epochz" in (status.error or "")


def test_a_ridge_challenger_is_compared_with_an_lstm_champion_on_the_same_days(
    platform: LocalPlatform, asset: DataAsset, completed_job: str
) -> None:
    champion = platform.register_model("msft-cross", completed_job, {"model_family": "lstm"})
    job = "retrain-msft-ridge-train"
    request = dataclasses.replace(
        _request(job, asset, champion=champion.to_dict()), trainer="ridge", hyperparameters={"alpha": "auto"}
    )
    platform.submit_training(request)
    assert _wait(platform, job).succeeded, (platform.state_dir / "jobs" / job / "std_log.txt").read_text()[
        -2000:
    ]
    spec = read_json(platform.state_dir / "jobs" / job / "job.json")
    assert spec["command"][1] == str(platform.state_dir / "jobs" / job / "code" / "ridge" / "train.py")
    metrics = platform.get_job_metrics(job)
    errors = json.loads((platform.state_dir / "jobs" / job / "outputs" / "test_errors.json").read_text())
    lstm_errors = platform.state_dir / "jobs" / completed_job / "outputs" / "test_errors.json"
    if lstm_errors.is_file():  # trainer/train.py writes it once the monitoring work lands
        assert json.loads(lstm_errors.read_text())["dates"] == errors["dates"]
    actual, champion_forecast = errors["actual"], errors["champion"]
    assert len(champion_forecast) == len(actual) == len(errors["dates"])
    # The LSTM champion, loaded here on its own, forecasts those very days (its own window before each).
    import mlflow.pyfunc

    lstm = mlflow.pyfunc.load_model(str(platform.state_dir / "jobs" / completed_job / "outputs" / "model"))
    window = int(lstm.metadata.metadata["window"])
    prices = pd.read_csv(asset.uri)
    day = {d: i for i, d in enumerate(prices["Date"].astype(str).str[:10])}
    closes = prices["Close"].to_numpy(dtype=float)
    rows = [closes[day[d] - window : day[d]] for d in errors["dates"]]
    frame = pd.DataFrame(rows, columns=[f"c{i}" for i in range(window)])
    assert lstm.predict(frame)["forecast"].tolist() == pytest.approx(champion_forecast, rel=1e-6)
    assert [closes[day[d]] for d in errors["dates"]] == pytest.approx(actual)
    recomputed = sum(abs(c - a) for c, a in zip(champion_forecast, actual, strict=True)) / len(actual)
    assert metrics["champion_mae"] == pytest.approx(recomputed, rel=1e-9)
    assert metrics["mae"] != metrics["champion_mae"]  # two different families, really compared
    # The ridge model registered from the job carries the fit ends its trainer recorded.
    ridge = platform.register_model("msft-cross", job, {"model_family": "ridge"})
    assert ridge.tags[TAG_FITTED_DATA_END] == str(prices["Date"].iloc[-1])[:10]
    assert ridge.tags[TAG_EVALUATION_FIT_END] < errors["dates"][0]


def test_event_json_is_kept_with_the_job(platform: LocalPlatform, completed_job: str) -> None:
    event = json.loads((platform.state_dir / "jobs" / completed_job / "event.json").read_text())
    assert event["data"]["runId"] == completed_job


def test_a_registered_model_deploys_from_the_registry_and_scores(
    platform: LocalPlatform, completed_job: str, sample_csv: Path
) -> None:
    model = platform.register_model(MODEL, completed_job, {})
    endpoint = platform.begin_create_endpoint("msft-platform")
    platform.begin_deployment("msft-platform", "blue", model)
    deadline = time.monotonic() + 180
    while (state := platform.get_deployment("msft-platform", "blue")).state == "Creating":
        assert time.monotonic() < deadline, "slot not live in time"
        time.sleep(0.25)
    assert state.state == "Succeeded", state.error
    slot_dir = (
        platform.state_dir / "endpoints" / "msft-platform" / "blue" / "azureml-models" / MODEL / model.version
    )
    assert (slot_dir / "model" / "MLmodel").is_file()  # Azure's <name>/<version>/ layout
    platform.set_traffic("msft-platform", {"blue": 100})
    platform.wait_until_ready("msft-platform")  # a traffic update is long-running, as in Azure
    closes = [float(c) for c in pd.read_csv(sample_csv)["Close"].tail(40)]
    answer = platform.invoke("msft-platform", {"close": closes})
    assert answer["model"]["name"] == MODEL and answer["model"]["version"] == model.version
    assert platform.get_endpoint("msft-platform").scoring_uri == endpoint.scoring_uri


def test_a_job_outlives_the_process_that_submitted_it(platform: LocalPlatform, asset: DataAsset) -> None:
    job = "retrain-msft-orphan-train"
    submit = (
        "import sys, os, signal\n"
        "from retrain.local.platform import LocalPlatform\n"
        "from retrain.ports import TrainingRequest\n"
        "p = LocalPlatform(sys.argv[1])\n"
        "p.submit_training(TrainingRequest.from_dict(json.loads(sys.argv[2])))\n"
        "os.kill(os.getpid(), signal.SIGKILL)  # the host dies right after submitting\n"
    )
    request = json.dumps(_request(job, asset).to_dict())
    done = subprocess.run(
        [sys.executable, "-c", "import json\n" + submit, str(platform.state_dir), request],
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert done.returncode == -9, done.stderr
    assert _wait(platform, job).status == "Completed"
