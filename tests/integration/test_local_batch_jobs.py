"""Batch training jobs on the local platform for real (ports.TrainsBatches): one detached runner per batch
running the kit's batch runner from the job's assembled code with the ridge trainer, its Event Grid event
POSTed to a webhook receiver on 127.0.0.1 (standing in for the local host), per-ticker results read from
its outputs, registration per ticker; a broken ticker fails alone, a batch where none trains fails with
the summary's reasons, and the batch slots (RETRAIN_LOCAL_BATCH_JOBS) hold a batch Queued until one frees."""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from functions_host.keys import load_or_create_keys
from retrain.job_code import BATCH_RUNNER
from retrain.local.platform import LocalPlatform
from retrain.local.processes import process_alive, read_json, stop_process_group
from retrain.ports import BatchTrainingRequest, DataAsset, JobStatus, PlatformError, TrainsBatches
from retrain.vocabulary import TAG_FITTED_DATA_END
from tests.helpers import Receiver

pytestmark = pytest.mark.slow
GOOD, SHORT, BROKEN = "AAA", "CCC", "BBB"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver([])
    yield r
    r.stop()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[LocalPlatform]:
    state = tmp_path_factory.mktemp("state")
    load_or_create_keys(state, environ={})
    p = LocalPlatform(state, host_url=receiver.url)
    yield p
    for runner in (state / "jobs").glob("*/runner.json"):  # never leave a job running
        info = read_json(runner)
        stop_process_group(info["pid"], info["start_ticks"])


@pytest.fixture(scope="module")
def assets(
    platform: LocalPlatform, sample_csv: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, DataAsset]:
    """Three small synthetic-sized tickers: the sample's last 500 days, its last 400, and a copy of the
    first whose Close column is not a number."""
    folder = tmp_path_factory.mktemp("batch-data")
    frame = pd.read_csv(sample_csv)
    frame.tail(500).to_csv(folder / "good.csv", index=False)
    frame.tail(400).to_csv(folder / "short.csv", index=False)
    broken = frame.tail(500).copy()
    broken["Close"] = "n/a"
    broken.to_csv(folder / "broken.csv", index=False)
    return {
        ticker: platform.register_data(
            f"{ticker.lower()}-daily", "v1", str(folder / name), {"ticker": ticker}
        )
        for ticker, name in ((GOOD, "good.csv"), (BROKEN, "broken.csv"), (SHORT, "short.csv"))
    }


def _request(job: str, entries: list[tuple[str, DataAsset, dict | None]]) -> BatchTrainingRequest:
    return BatchTrainingRequest(
        job_name=job,
        experiment_name="fleet-test",
        instance_id=f"fleet-test-{job}",
        code_version="0.1.0+test",
        entries=[{"ticker": t, "data": a.to_dict(), "champion": c} for t, a, c in entries],
        trainer="ridge",
    )


def _wait(platform: LocalPlatform, job: str, timeout: float = 300) -> JobStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = platform.get_job(job)
        if status.terminal:
            return status
        time.sleep(0.3)
    raise AssertionError(f"job {job} not finished after {timeout}s")


def _wait_queued(platform: LocalPlatform, job: str) -> None:
    """Until the job's runner says it waits for a batch slot."""
    status_file = platform.state_dir / "jobs" / job / "status.json"
    _until(lambda: "waiting" in (read_json(status_file) if status_file.is_file() else {}), f"{job} waiting")


def _until(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def batch(platform: LocalPlatform, assets: dict[str, DataAsset]) -> str:
    job = "fleet-test-b0000-train"
    request = _request(
        job, [(GOOD, assets[GOOD], None), (BROKEN, assets[BROKEN], None), (SHORT, assets[SHORT], None)]
    )
    assert platform.submit_batch_training(request) == job
    runner = read_json(platform.state_dir / "jobs" / job / "runner.json")
    assert platform.submit_batch_training(request) == job  # a replayed activity: no second runner
    assert read_json(platform.state_dir / "jobs" / job / "runner.json") == runner
    status = _wait(platform, job)
    assert status.status == "Completed", (platform.state_dir / "jobs" / job / "std_log.txt").read_text()[
        -3000:
    ]
    return job


def test_the_local_platform_trains_batches(platform: LocalPlatform) -> None:
    assert isinstance(platform, TrainsBatches)


def test_a_batch_is_one_runner_over_the_assembled_code_and_wakes_its_orchestration(
    platform: LocalPlatform, batch: str, receiver: Receiver
) -> None:
    job_dir = platform.state_dir / "jobs" / batch
    spec = read_json(job_dir / "job.json")
    assert spec["command"][1] == str(job_dir / "code" / "ridge" / BATCH_RUNNER)  # the kit, copied in
    assert (job_dir / "code" / "ridge" / "train.py").is_file()
    manifest = read_json(job_dir / "inputs" / "batch.json")
    assert [e["ticker"] for e in manifest["tickers"]] == [GOOD, BROKEN, SHORT]
    assert manifest["tickers"][0]["data_asset"] == "aaa-daily:v1"
    assert [h["status"] for h in read_json(job_dir / "status.json")["history"]] == [
        "Queued",
        "Running",
        "Completed",
    ]

    _until(lambda: any(r["body"][0]["data"]["runId"] == batch for r in receiver.requests), "the job's event")
    [request] = [r for r in receiver.requests if r["body"][0]["data"]["runId"] == batch]
    [event] = request["body"]
    assert event["eventType"] == "Microsoft.MachineLearningServices.RunCompleted"
    assert event["data"]["runTags"]["orchestration_instance_id"] == f"fleet-test-{batch}"
    assert event["data"]["runTags"]["batch_tickers"] == f"{GOOD},{BROKEN},{SHORT}"


def test_each_tickers_results_are_read_from_the_outputs_and_the_broken_one_failed_alone(
    platform: LocalPlatform, batch: str
) -> None:
    summary = platform.get_batch_summary(batch)
    assert (summary["ok"], summary["failed"]) == (2, 1)
    assert summary["tickers"][BROKEN]["status"] == "failed" and "Close" in summary["tickers"][BROKEN]["error"]
    for ticker in (GOOD, SHORT):
        metrics = platform.get_batch_metrics(batch, ticker)
        assert {"mae", "naive_mae"} <= set(metrics) and metrics["mae"] == summary["tickers"][ticker][
            "metrics"
        ]["mae"]
        errors = platform.get_batch_test_errors(batch, ticker)
        assert len(errors["dates"]) == len(errors["model"]) > 0 and errors["champion"] is None
    with pytest.raises(PlatformError, match=f"{BROKEN} failed in batch job {batch}: .*Close"):
        platform.get_batch_metrics(batch, BROKEN)
    with pytest.raises(PlatformError, match="not in batch job"):
        platform.get_batch_test_errors(batch, "ZZZ")


def test_each_trained_ticker_registers_once_from_its_own_run(
    platform: LocalPlatform, batch: str, assets: dict[str, DataAsset], tmp_path: Path
) -> None:
    first = platform.register_batch_model("aaa-model", batch, GOOD, {"data_version": "v1"})
    assert platform.register_batch_model("aaa-model", batch, GOOD, {"data_version": "v1"}) == first
    assert (first.version, first.tags["job_name"], first.tags["ticker"]) == ("1", batch, GOOD)
    assert first.tags[TAG_FITTED_DATA_END] == str(pd.read_csv(assets[GOOD].uri)["Date"].iloc[-1])[:10]
    other = platform.register_batch_model("ccc-model", batch, SHORT, {})
    assert other.version == "1"
    version = platform.client.get_model_version("aaa-model", "1")
    run = read_json(platform.state_dir / "jobs" / batch / "outputs" / GOOD / "run.json")
    assert version.run_id == run["run_id"] != platform.job_run_id(batch)  # the ticker's run, nested
    platform._fetch_model(first, tmp_path / "dl")
    assert (tmp_path / "dl" / "model" / "MLmodel").is_file()
    with pytest.raises(PlatformError, match=f"{BROKEN} failed"):
        platform.register_batch_model("bbb-model", batch, BROKEN, {})


def test_a_champion_reaches_its_ticker_and_a_batch_waits_queued_for_a_free_slot(
    platform: LocalPlatform, batch: str, assets: dict[str, DataAsset], monkeypatch: pytest.MonkeyPatch
) -> None:
    champion = platform.register_batch_model("aaa-model", batch, GOOD, {})
    monkeypatch.setenv("RETRAIN_LOCAL_BATCH_JOBS", "1")
    job = "fleet-test-b0001-train"
    with (platform.state_dir / "locks" / "batch-slot-0.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another batch trains in the only slot
        platform.submit_batch_training(_request(job, [(GOOD, assets[GOOD], champion.to_dict())]))
        _wait_queued(platform, job)
        status = read_json(platform.state_dir / "jobs" / job / "status.json")
        assert status["waiting"] == "all 1 local batch slots are busy"
        assert platform.get_job(job).status == "Queued"
    assert _wait(platform, job).status == "Completed"  # the slot freed: it trained
    assert "champion_mae" in platform.get_batch_metrics(job, GOOD)
    assert len(platform.get_batch_test_errors(job, GOOD)["champion"]) > 0


def test_a_batch_where_no_ticker_trains_fails_with_each_tickers_reason(
    platform: LocalPlatform, assets: dict[str, DataAsset]
) -> None:
    job = "fleet-test-b0002-train"
    platform.submit_batch_training(_request(job, [(BROKEN, assets[BROKEN], None)]))
    status = _wait(platform, job)
    assert status.status == "Failed"
    assert (
        status.error.startswith(f"no ticker of the batch trained (1 failed): {BROKEN}: ")
        and "Close" in status.error
    )
    assert platform.get_batch_summary(job)["failed"] == 1
    with pytest.raises(PlatformError, match="not Completed"):
        platform.register_batch_model("bbb-model", job, BROKEN, {})


def test_cancel_stops_a_queued_batch_and_a_dead_runner_fails_it(
    platform: LocalPlatform, assets: dict[str, DataAsset], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETRAIN_LOCAL_BATCH_JOBS", "1")
    canceled, killed = "fleet-test-b0003-train", "fleet-test-b0004-train"
    with (platform.state_dir / "locks" / "batch-slot-0.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        for job in (canceled, killed):
            platform.submit_batch_training(_request(job, [(GOOD, assets[GOOD], None)]))
            _wait_queued(platform, job)
        stopped = platform.cancel_job(canceled)
        assert stopped is not None and stopped.status == "Canceled"
        runner = read_json(platform.state_dir / "jobs" / canceled / "runner.json")
        assert not process_alive(runner["pid"], runner["start_ticks"])

        info = read_json(platform.state_dir / "jobs" / killed / "runner.json")
        stop_process_group(info["pid"], info["start_ticks"])  # the runner dies without an outcome
        dead = platform.get_job(killed)
        assert dead.status == "Failed" and "is gone" in dead.error
    assert platform.get_job(canceled).status == "Canceled"  # it never trained once the slot freed


def test_the_batch_activities_judge_and_register_from_the_local_outputs(
    platform: LocalPlatform, batch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retrain import batch_jobs

    monkeypatch.setattr(batch_jobs, "get_platform", lambda: platform)
    judged = batch_jobs.judge_batch(
        {
            "job_name": batch,
            "tickers": {t: {"has_champion": False} for t in (GOOD, BROKEN, SHORT)},
            "gate": {"baseline_margin": 0.05, "gate_alpha": 0.05},
        }
    )
    assert judged[BROKEN]["status"] == "failed" and "Close" in judged[BROKEN]["error"]
    for ticker in (GOOD, SHORT):
        assert judged[ticker]["status"] == "ok" and judged[ticker]["decision"]["reasons"]
        assert judged[ticker]["metrics"] == platform.get_batch_metrics(batch, ticker)
    models = {t: {"name": f"{t.lower()}-judged", "tags": {"gate_decision": "x"}} for t in (GOOD, SHORT)}
    payload = {"job_name": batch, "models": models}
    first = batch_jobs.register_batch_models(payload)
    assert batch_jobs.register_batch_models(payload) == first  # a replay: the same versions
    assert {t: ref["version"] for t, ref in first.items()} == {GOOD: "1", SHORT: "1"}
