"""The entities the azureml adapter builds, validated by the SDK's own YAML schemas: each one is dumped
to YAML and loaded back with `load_job` / `load_data` / `load_model` / `load_online_*`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from azure.ai.ml import (
    load_compute,
    load_data,
    load_job,
    load_model,
    load_online_deployment,
    load_online_endpoint,
)

from retrain import trainers
from retrain.azureml import entities
from retrain.job_code import BATCH_RUNNER, assemble_job_code
from retrain.ports import ModelRef, PlatformError, TrainingRequest
from tests.unit.azure_recording_transport import code_root


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    return code_root(tmp_path)


def _request(champion: dict | None = None, **hyper: object) -> TrainingRequest:
    return TrainingRequest(
        job_name="retrain-msft-20260105-abc",
        experiment_name="retrain-msft",
        ticker="MSFT",
        data={"name": "msft-daily", "version": "5f2c9a", "uri": "azureml:msft-daily:5f2c9a", "tags": {}},
        instance_id="inst-42",
        code_version="0.1.0",
        champion=champion,
        hyperparameters=dict(hyper),
    )


def test_training_job_round_trips_through_the_job_schema(tmp_path: Path, repo: Path) -> None:
    code = assemble_job_code(repo / "trainer", tmp_path / "code")
    job = entities.training_job(
        _request({"name": "msft-forecaster", "version": "3"}, max_epochs=5), "cpu-cluster", code, repo
    )
    path = tmp_path / "job.yml"
    # command() returns the builder node; jobs.create_or_update submits its CommandJob form.
    job._to_job().dump(path)
    loaded = load_job(path)

    assert loaded.type == "command"
    assert loaded.name == "retrain-msft-20260105-abc"
    assert loaded.experiment_name == "retrain-msft"
    assert loaded.compute == "cpu-cluster"
    assert loaded.command == (
        "python train.py --data ${{inputs.data}} --output ${{outputs.output}} "
        "--champion-model ${{inputs.champion}} --param max_epochs=${{inputs.param_max_epochs}}"
    )
    # The job's code is the assembled folder (the trainer folder plus the kit), as the local platform runs.
    assert Path(str(loaded.code)).resolve() == code.resolve()
    assert (code / "train.py").is_file() and (code / BATCH_RUNNER).is_file()
    assert loaded.inputs["data"].type == "uri_file"
    assert loaded.inputs["data"].path.removeprefix("azureml:") == "msft-daily:5f2c9a"
    assert loaded.inputs["champion"].type == "mlflow_model"
    assert loaded.inputs["champion"].path.removeprefix("azureml:") == "msft-forecaster:3"
    assert loaded.outputs["output"].type == "uri_folder"
    assert loaded.tags == {
        "orchestration_instance_id": "inst-42",
        "ticker": "MSFT",
        "data_asset": "msft-daily",
        "data_version": "5f2c9a",
        "code_version": "0.1.0",
        "champion": "msft-forecaster:3",
        "trainer": "lstm",
    }
    assert loaded.environment.image == entities.BASE_IMAGE
    assert loaded.environment.conda_file  # the trainer's conda YAML was read into the environment


def test_training_job_without_champion_has_no_champion_input(tmp_path: Path, repo: Path) -> None:
    job = entities.training_job(_request(), "cpu-cluster", repo / "trainer", repo)
    job._to_job().dump(tmp_path / "job.yml")
    loaded = load_job(tmp_path / "job.yml")
    assert "champion" not in loaded.inputs
    assert "--champion-model" not in loaded.command
    assert "champion" not in loaded.tags


def test_hyperparameters_pass_through_generically_as_param_inputs(tmp_path: Path, repo: Path) -> None:
    """Any name the trainer understands travels: no list of known flags in the adapter."""
    request = _request(alpha=0.5, lags=10, made_up_by_a_user="x-1", fit_intercept=True)
    job = entities.training_job(request, "cpu-cluster", repo / "trainer", repo)
    job._to_job().dump(tmp_path / "job.yml")
    loaded = load_job(tmp_path / "job.yml")
    assert loaded.command == (
        "python train.py --data ${{inputs.data}} --output ${{outputs.output}} "
        "--param alpha=${{inputs.param_alpha}} --param fit_intercept=${{inputs.param_fit_intercept}} "
        "--param lags=${{inputs.param_lags}} --param made_up_by_a_user=${{inputs.param_made_up_by_a_user}}"
    )
    # The YAML the SDK wrote: string literal inputs (the trainer parses them).
    assert {
        k: v for k, v in yaml.safe_load((tmp_path / "job.yml").read_text())["inputs"].items() if k != "data"
    } == {
        "param_alpha": "0.5",
        "param_lags": "10",
        "param_made_up_by_a_user": "x-1",
        "param_fit_intercept": "true",
    }


def test_the_requests_trainer_folder_is_the_jobs_code_and_environment(tmp_path: Path) -> None:
    import dataclasses

    repo = Path(__file__).resolve().parents[2]
    request = dataclasses.replace(_request(alpha=1.0), trainer="ridge")
    code = assemble_job_code(repo / "trainers" / "ridge", tmp_path / "code")
    job = entities.training_job(request, "cpu-cluster", code, repo)
    job._to_job().dump(tmp_path / "job.yml")
    loaded = load_job(tmp_path / "job.yml")
    assert Path(str(loaded.code)).resolve() == code.resolve()
    assert loaded.command.startswith("python train.py --data ${{inputs.data}}")
    assert "scikit-learn" in str(loaded.environment.conda_file)  # the ridge folder's own conda file
    assert loaded.tags["trainer"] == "ridge"


@pytest.mark.parametrize(
    "trainer,hyper,message",
    [
        (
            "../../etc",
            {},
            f"unknown trainer '../../etc'; use one of the trainers in this repository: {', '.join(trainers.names())}",
        ),
        ("lstm", {"bad name": 1}, "hyperparameter name 'bad name' is invalid"),
        ("lstm", {"alpha": "1; rm -rf /"}, "no spaces or quotes"),
        ("lstm", {"alpha": [1, 2]}, "must be a string, number or boolean"),
        ("lstm", {"alpha": float("nan")}, "finite"),
    ],
)
def test_unknown_trainer_or_unsafe_hyperparameter_is_rejected(
    repo: Path, trainer: str, hyper: dict, message: str
) -> None:
    import dataclasses

    request = dataclasses.replace(_request(**hyper), trainer=trainer)
    with pytest.raises(PlatformError) as raised:
        entities.training_job(request, "cpu-cluster", repo / "trainer", repo)
    assert message in str(raised.value)


def test_data_asset_round_trips(tmp_path: Path) -> None:
    csv = tmp_path / "msft.csv"
    csv.write_text("Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1.5,100\n")
    data = entities.data_entity("msft-daily", "5f2c9a", str(csv), {"ticker": "MSFT", "sha256": "ab"})
    data.dump(tmp_path / "data.yml")
    loaded = load_data(tmp_path / "data.yml")
    assert (loaded.name, loaded.version, loaded.type) == ("msft-daily", "5f2c9a", "uri_file")
    assert loaded.tags == {"ticker": "MSFT", "sha256": "ab"}
    assert Path(loaded.path).resolve() == csv.resolve()


def test_model_round_trips_with_job_artifact_path_and_lineage_tags(tmp_path: Path) -> None:
    model = entities.model_entity("msft-forecaster", "4", "retrain-msft-1", {"data_version": "5f2c9a"})
    model.dump(tmp_path / "model.yml")
    loaded = load_model(tmp_path / "model.yml")
    assert loaded.type == "mlflow_model"
    assert loaded.path == "azureml://jobs/retrain-msft-1/outputs/artifacts/paths/model/"
    assert loaded.tags == {"data_version": "5f2c9a", "job_name": "retrain-msft-1"}


def test_compute_cluster_scales_to_zero(tmp_path: Path) -> None:
    cluster = entities.compute_cluster("cpu-cluster", "Standard_DS3_v2", 2)
    cluster.dump(tmp_path / "compute.yml")
    loaded = load_compute(tmp_path / "compute.yml")
    assert (loaded.type, loaded.min_instances, loaded.max_instances, loaded.size) == (
        "amlcompute",
        0,
        2,
        "Standard_DS3_v2",
    )
    with pytest.raises(PlatformError, match="at least 1"):
        entities.compute_cluster("cpu-cluster", "Standard_DS3_v2", 0)


def test_endpoint_and_deployment_round_trip(tmp_path: Path, repo: Path) -> None:
    endpoint = entities.endpoint_entity("retrain-msft")
    # OnlineEndpoint.dump() ignores its destination and returns the schema's dict: write it ourselves.
    (tmp_path / "endpoint.yml").write_text(yaml.safe_dump(json.loads(json.dumps(endpoint.dump()))))
    loaded_endpoint = load_online_endpoint(tmp_path / "endpoint.yml")
    assert (loaded_endpoint.name, loaded_endpoint.auth_mode) == ("retrain-msft", "key")

    deployment = entities.deployment_entity(
        "retrain-msft", "green", ModelRef("msft-forecaster", "4"), "Standard_DS3_v2", repo
    )
    deployment.dump(tmp_path / "deployment.yml")
    loaded = load_online_deployment(tmp_path / "deployment.yml")
    assert (loaded.name, loaded.endpoint_name) == ("green", "retrain-msft")
    assert str(loaded.model).removeprefix("azureml:") == "msft-forecaster:4"
    assert loaded.code_configuration.scoring_script == "score.py"
    assert Path(str(loaded.code_configuration.code)).resolve() == (repo / "scorer").resolve()
    assert loaded.environment.image == entities.BASE_IMAGE
    assert (loaded.instance_type, loaded.instance_count) == ("Standard_DS3_v2", 1)


@pytest.mark.parametrize("bad", ["x", "1abc", "has space", "a" * 40, "ends-"])
def test_invalid_endpoint_names_are_rejected(bad: str) -> None:
    with pytest.raises(PlatformError, match="not a valid Azure ML name"):
        entities.endpoint_entity(bad)


def test_deployment_slot_must_be_blue_or_green(repo: Path) -> None:
    with pytest.raises(PlatformError, match="blue"):
        entities.deployment_entity("retrain-msft", "red", ModelRef("m", "1"), "Standard_DS3_v2", repo)


@pytest.mark.parametrize(
    "raw,expected",
    [
        (
            "/subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w/models/m/versions/7",
            ModelRef("m", "7"),
        ),
        ("azureml:msft-forecaster:12", ModelRef("msft-forecaster", "12")),
        ("something else", None),
        (None, None),
    ],
)
def test_parse_model_id(raw: str | None, expected: ModelRef | None) -> None:
    assert entities.parse_model_id(raw) == expected
