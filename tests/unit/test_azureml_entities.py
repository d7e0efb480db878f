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

from retrain.azureml import entities
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
    job = entities.training_job(
        _request({"name": "msft-forecaster", "version": "3"}, max_epochs=5), "cpu-cluster", repo
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
        "--champion-model ${{inputs.champion}} --max-epochs ${{inputs.max_epochs}}"
    )
    assert Path(str(loaded.code)).resolve() == (repo / "trainer").resolve()
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
    }
    assert loaded.environment.image == entities.BASE_IMAGE
    assert loaded.environment.conda_file  # the trainer's conda YAML was read into the environment


def test_training_job_without_champion_has_no_champion_input(tmp_path: Path, repo: Path) -> None:
    job = entities.training_job(_request(), "cpu-cluster", repo)
    job._to_job().dump(tmp_path / "job.yml")
    loaded = load_job(tmp_path / "job.yml")
    assert "champion" not in loaded.inputs
    assert "--champion-model" not in loaded.command
    assert "champion" not in loaded.tags


def test_unknown_hyperparameter_is_rejected_with_the_allowed_list(repo: Path) -> None:
    with pytest.raises(PlatformError, match="unknown hyperparameters.*allowed"):
        entities.training_job(_request(epochz=3), "cpu-cluster", repo)


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
