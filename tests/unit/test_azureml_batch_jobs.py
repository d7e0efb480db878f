"""Batch training jobs in the azureml adapter (ports.TrainsBatches), through the real azure-ai-ml objects
over the recording transport: the command job a batch submits (inputs, code, command, outputs, tags), the
per-ticker results read from its output folder on the default datastore, and registration per ticker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from azure.ai.ml import load_job

from retrain.azureml import entities
from retrain.job_code import assemble_job_code
from retrain.ports import BatchTrainingRequest, ModelRef, PlatformError, TrainsBatches
from retrain.vocabulary import TAG_EVALUATION_FIT_END, TAG_FITTED_DATA_END
from tests.unit.azure_recording_transport import CONTAINER, STORAGE_ACCOUNT, WS_PATH, ArmTransport

REPO = Path(__file__).resolve().parents[2]
JOB = "fleet-2026w49-b0000-train"
OUTPUT = f"/{CONTAINER}/azureml/{JOB}/output"


def _data(ticker: str, version: str = "5f2c9a") -> dict[str, Any]:
    name = f"{ticker.lower()}-daily"
    return {"name": name, "version": version, "uri": f"azureml:{name}:{version}", "tags": {}}


def _request(**hyper: Any) -> BatchTrainingRequest:
    return BatchTrainingRequest(
        job_name=JOB,
        experiment_name="fleet-ridge",
        instance_id="fleet-2026w49-b0000",
        code_version="0.1.0",
        entries=[
            {
                "ticker": "MSFT",
                "data": _data("MSFT"),
                "champion": {"name": "msft-forecaster", "version": "3"},
            },
            {"ticker": "BRK.B", "data": _data("BRK.B", "77aa01"), "champion": None},
        ],
        hyperparameters=dict(hyper),
        trainer="ridge",
    )


COMMAND = (
    "python trainer_kit/stage_inputs.py --into batch_inputs --data MSFT:${{inputs.data_0}} "
    "--champion MSFT:${{inputs.champion_0}} --data BRK.B:${{inputs.data_1}} && "
    "python trainer_kit/batch.py --inputs batch_inputs --output ${{outputs.output}} --entry train.py"
)


def test_the_batch_job_round_trips_through_the_job_schema(tmp_path: Path) -> None:
    code = assemble_job_code(REPO / "trainers" / "ridge", tmp_path / "code")
    job = entities.batch_training_job(_request(alpha=0.5), "cpu-cluster", code, REPO)
    job._to_job().dump(tmp_path / "job.yml")
    loaded = load_job(tmp_path / "job.yml")
    assert loaded.type == "command" and loaded.name == JOB and loaded.compute == "cpu-cluster"
    assert loaded.command == COMMAND + " --param alpha=${{inputs.param_alpha}}"
    assert Path(str(loaded.code)).resolve() == code.resolve()
    assert {
        k: (v.type, v.path.removeprefix("azureml:")) for k, v in loaded.inputs.items() if k != "param_alpha"
    } == {
        "data_0": ("uri_file", "msft-daily:5f2c9a"),
        "champion_0": ("mlflow_model", "msft-forecaster:3"),
        "data_1": ("uri_file", "brk.b-daily:77aa01"),
    }
    assert (loaded.outputs["output"].type, loaded.outputs["output"].mode) == ("uri_folder", "upload")
    assert (
        loaded.outputs["output"].path
        == f"azureml://datastores/workspaceblobstore/paths/azureml/{JOB}/output/"
    )
    assert loaded.tags == {
        "orchestration_instance_id": "fleet-2026w49-b0000",
        "code_version": "0.1.0",
        "trainer": "ridge",
        "batch_tickers": "MSFT,BRK.B",
    }
    assert "scikit-learn" in str(loaded.environment.conda_file)  # the trainer folder's own conda file


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([], "has no entries"),
        ([{"ticker": "msft; rm -rf /", "data": _data("MSFT")}], "canonical symbol"),
        (
            [{"ticker": "MSFT", "data": _data("MSFT")}, {"ticker": "MSFT", "data": _data("MSFT")}],
            "listed once",
        ),
    ],
)
def test_an_unusable_batch_is_refused_saying_what_to_send(entries: list, message: str) -> None:
    request = BatchTrainingRequest(JOB, "fleet-ridge", "i", "0.1.0", entries=entries, trainer="ridge")
    with pytest.raises(PlatformError, match=message):
        entities.batch_training_job(request, "cpu-cluster", REPO / "trainers" / "ridge", REPO)


def test_the_adapter_trains_batches(platform) -> None:
    assert isinstance(platform, TrainsBatches)


def test_submit_uploads_the_assembled_code_and_puts_one_command_job(platform, arm: ArmTransport) -> None:
    assert platform.submit_batch_training(_request()) == JOB
    uploads = {c.path for c in arm.calls if c.method == "PUT" and c.host.endswith(".blob.core.windows.net")}
    for name in ("ridge/train.py", "ridge/trainer_kit/batch.py", "ridge/trainer_kit/stage_inputs.py"):
        assert any(path.endswith(name) for path in uploads), name
    [put] = arm.find("PUT", rf"^{WS_PATH}/jobs/{JOB}$")
    props = put.body["properties"]
    assert props["jobType"] == "Command" and props["experimentName"] == "fleet-ridge"
    assert props["command"] == COMMAND
    assert props["codeId"].startswith(f"{WS_PATH}/codes/")
    assert props["inputs"] == {
        "data_0": {"uri": f"{WS_PATH}/data/msft-daily/versions/5f2c9a", "jobInputType": "uri_file"},
        "champion_0": {"uri": f"{WS_PATH}/models/msft-forecaster/versions/3", "jobInputType": "mlflow_model"},
        "data_1": {"uri": f"{WS_PATH}/data/brk.b-daily/versions/77aa01", "jobInputType": "uri_file"},
    }
    assert props["outputs"]["output"]["jobOutputType"] == "uri_folder"
    assert props["outputs"]["output"]["mode"] == "Upload"  # written on the node, uploaded at the end
    assert (
        props["outputs"]["output"]["uri"]
        == f"azureml://datastores/workspaceblobstore/paths/azureml/{JOB}/output/"
    )
    assert (
        props["tags"]["orchestration_instance_id"] == "fleet-2026w49-b0000"
    )  # the Event Grid event's way back
    assert props["computeId"] == f"{WS_PATH}/computes/cpu-cluster"

    before = len(arm.calls)  # the activity runs again: the job exists, nothing is submitted twice
    assert platform.submit_batch_training(_request()) == JOB
    assert [(c.method, c.path.rsplit("/", 2)[-2]) for c in arm.calls[before:]] == [("GET", "jobs")]


@pytest.fixture()
def finished(platform, arm: ArmTransport) -> ArmTransport:
    """The submitted batch, Completed, with what the runner wrote to its output: MSFT trained, BRK.B not."""
    platform.submit_batch_training(_request())
    arm.store[f"{WS_PATH}/jobs/{JOB}"]["properties"]["status"] = "Completed"
    summary = {
        "tickers": {
            "MSFT": {"status": "ok", "metrics": {"mae": 0.2}, "seconds": 1.5},
            "BRK.B": {"status": "failed", "error": "every Close in BRK.B.csv must be a finite number > 0"},
        },
        "ok": 1,
        "failed": 1,
    }
    files = {
        "batch_summary.json": summary,
        "MSFT/metrics.json": {"mae": 0.2, "naive_mae": 0.25, "n_test": 60, "note": "text is left out"},
        "MSFT/test_errors.json": {"dates": ["2026-12-04"], "actual": [1.0], "model": [1.1], "naive": [0.9]},
        "MSFT/run.json": {
            "run_id": "r-msft",
            "fitted_data_end": "2026-12-04",
            "evaluation_fit_end": "2026-09-01",
        },
    }
    for name, content in files.items():
        arm.blobs[f"{OUTPUT}/{name}"] = json.dumps(content).encode()
    return arm


def test_per_ticker_results_are_read_from_the_jobs_output_with_the_platforms_identity(
    platform, finished
) -> None:
    assert platform.get_batch_summary(JOB)["tickers"]["BRK.B"]["status"] == "failed"
    assert platform.get_batch_metrics(JOB, "MSFT") == {"mae": 0.2, "naive_mae": 0.25, "n_test": 60.0}
    assert platform.get_batch_test_errors(JOB, "MSFT")["dates"] == ["2026-12-04"]
    with pytest.raises(PlatformError, match="BRK.B failed in batch job .*: every Close"):
        platform.get_batch_metrics(JOB, "BRK.B")
    with pytest.raises(PlatformError, match="not in batch job"):
        platform.get_batch_test_errors(JOB, "AAPL")
    reads = [c for c in finished.calls if c.host.endswith(".blob.core.windows.net") and c.method == "GET"]
    assert {c.host for c in reads} == {f"{STORAGE_ACCOUNT}.blob.core.windows.net"}
    assert f"{OUTPUT}/MSFT/metrics.json" in {c.path for c in reads}
    assert all(c.headers["Authorization"] == "Bearer offline-test-token" for c in reads)  # no account key
    # The job's output location is looked up once per job, not for every file.
    assert len(finished.find("GET", rf"/jobs/{JOB}$")) <= 3


def test_a_batch_without_a_summary_says_what_state_it_is_in(platform, arm: ArmTransport) -> None:
    platform.submit_batch_training(_request())
    with pytest.raises(PlatformError, match="has no batch_summary.json \\(it is NotStarted\\)"):
        platform.get_batch_summary(JOB)
    with pytest.raises(PlatformError, match="does not exist"):
        platform.get_batch_summary("never-submitted")


def test_a_tickers_model_registers_once_from_the_jobs_output(platform, finished) -> None:
    first = platform.register_batch_model("msft-forecaster", JOB, "MSFT", {"data_version": "5f2c9a"})
    assert (first.name, first.version) == ("msft-forecaster", "1")
    [put] = finished.find("PUT", r"/models/msft-forecaster/versions/1$")
    assert put.body["properties"]["modelType"] == "mlflow_model"
    assert put.body["properties"]["modelUri"] == f"azureml://jobs/{JOB}/outputs/output/paths/MSFT/model/"
    assert put.body["properties"]["tags"] == {
        "data_version": "5f2c9a",
        "job_name": JOB,
        "ticker": "MSFT",
        TAG_FITTED_DATA_END: "2026-12-04",
        TAG_EVALUATION_FIT_END: "2026-09-01",
    }
    again = platform.register_batch_model("msft-forecaster", JOB, "MSFT", {"data_version": "5f2c9a"})
    assert again.version == "1" and len(finished.find("PUT", r"/models/")) == 1  # a replay: no new version
    with pytest.raises(PlatformError, match="BRK.B failed in batch job"):
        platform.register_batch_model("brk-b-forecaster", JOB, "BRK.B", {})


def test_only_a_completed_batchs_models_register(platform, finished) -> None:
    finished.store[f"{WS_PATH}/jobs/{JOB}"]["properties"]["status"] = "Failed"
    with pytest.raises(PlatformError, match="is Failed, not Completed"):
        platform.register_batch_model("msft-forecaster", JOB, "MSFT", {})
    assert not finished.find("PUT", r"/models/")


# ---- the batch activities (retrain/batch_jobs.py) over the azureml adapter ----------------------------
@pytest.fixture()
def activities_on(platform, monkeypatch: pytest.MonkeyPatch):
    from retrain import batch_jobs

    monkeypatch.setattr(batch_jobs, "get_platform", lambda: platform)
    return batch_jobs


def test_the_submit_activity_submits_one_job_for_the_batch(
    platform, arm: ArmTransport, activities_on
) -> None:
    payload = {k: v for k, v in _request().to_dict().items() if k != "code_version"}
    submitted = activities_on.submit_batch_training_job(payload)
    assert submitted["job_name"] == JOB and submitted["code_version"]
    [put] = arm.find("PUT", rf"^{WS_PATH}/jobs/{JOB}$")
    assert put.body["properties"]["tags"]["code_version"] == submitted["code_version"]


def test_judge_batch_gates_each_trained_ticker_and_fails_the_others_with_their_reason(
    finished: ArmTransport, activities_on
) -> None:
    days = 40
    errors = {
        "dates": [f"2026-10-{d:02d}" for d in range(1, days + 1)],
        "actual": [100.0 + d for d in range(days)],
        "model": [100.0 + d + (0.1 if d % 2 else -0.1) for d in range(days)],
        "naive": [100.0 + d + (1.0 if d % 2 else -1.0) for d in range(days)],
        "champion": None,
    }
    finished.blobs[f"{OUTPUT}/MSFT/test_errors.json"] = json.dumps(errors).encode()
    gate = {"baseline_margin": 0.05, "gate_alpha": 0.05, "force": False, "gate_metrics": {}}
    judged = activities_on.judge_batch(
        {
            "job_name": JOB,
            "tickers": {"MSFT": {"has_champion": False}, "BRK.B": {"has_champion": True}, "AAPL": {}},
            "gate": gate,
        }
    )
    assert judged["MSFT"]["status"] == "ok" and judged["MSFT"]["decision"]["deploy"] is True
    assert judged["MSFT"]["metrics"]["mae"] == 0.2 and judged["MSFT"]["warnings"] == []
    assert judged["BRK.B"] == {
        "status": "failed",
        "error": "every Close in BRK.B.csv must be a finite number > 0",
    }
    assert judged["AAPL"]["status"] == "failed" and "not in the summary" in judged["AAPL"]["error"]


def test_unreadable_test_errors_are_judged_with_the_fixed_margins_and_a_warning(
    finished: ArmTransport, activities_on
) -> None:
    finished.blob_errors[f"{OUTPUT}/MSFT/test_errors.json"] = 403
    judged = activities_on.judge_batch(
        {"job_name": JOB, "tickers": {"MSFT": {"has_champion": False}}, "gate": {"baseline_margin": 0.05}}
    )
    [warning] = judged["MSFT"]["warnings"]
    assert "could not be read" in warning and "HTTP 403" in warning
    assert "fixed margin" in " ".join(judged["MSFT"]["decision"]["reasons"])


def test_register_batch_models_registers_each_ticker_once(finished: ArmTransport, activities_on) -> None:
    payload = {
        "job_name": JOB,
        "models": {"MSFT": {"name": "msft-forecaster", "tags": {"gate_decision": "deploy"}}},
    }
    first = activities_on.register_batch_models(payload)
    assert activities_on.register_batch_models(payload) == first  # a replayed activity
    assert first["MSFT"]["version"] == "1" and len(finished.find("PUT", r"/models/")) == 1
    activities_on.get_platform().set_champion(ModelRef.from_dict(first["MSFT"]))
    names = {"MSFT": "msft-forecaster", "BRK.B": "brk-b-model"}
    champions = activities_on.get_champions({"model_names": names})
    assert champions["MSFT"]["version"] == "1" and champions["BRK.B"] is None


def test_a_platform_without_batches_fails_the_activities_permanently(monkeypatch: pytest.MonkeyPatch) -> None:
    from retrain import batch_jobs
    from retrain.activities import ACTIVITY_ERROR, report_failures

    class SingleTickerOnly:  # a platform of the port without the TrainsBatches capability
        pass

    monkeypatch.setattr(batch_jobs, "get_platform", SingleTickerOnly)
    result = report_failures(batch_jobs.judge_batch)({"job_name": JOB, "tickers": {}})
    assert result[ACTIVITY_ERROR]["kind"] == "permanent"
    assert "SingleTickerOnly platform cannot train batches" in result[ACTIVITY_ERROR]["message"]
