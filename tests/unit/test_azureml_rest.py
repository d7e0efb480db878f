"""The azureml adapter's REST calls, through the real azure-ai-ml SDK and a recording azure-core transport
(tests/unit/azure_recording_transport.py): method, ARM path, api-version and the body fields that matter.
Nothing reaches the network: ARM, the datastore's blob storage, the workspace MLflow API and the
scoring URI are all answered by the transport."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from retrain.azureml.client import RETRY_OPTIONS
from retrain.azureml.platform import AzureMLPlatform, map_job_status
from retrain.ports import (
    JOB_STATUSES,
    JOB_TERMINAL_STATUSES,
    ModelRef,
    PlatformError,
    TrainingRequest,
    TransientPlatformError,
)
from retrain.vocabulary import TAG_EVALUATION_FIT_END, TAG_FITTED_DATA_END
from tests.unit.azure_recording_transport import (
    SCORING_HOST,
    WORKSPACE_ENV,
    WS_PATH,
    ArmTransport,
    StaticTokenCredential,
)

ENV = WORKSPACE_ENV


def _request(data: dict[str, Any], champion: dict[str, Any] | None = None) -> TrainingRequest:
    return TrainingRequest(
        job_name="retrain-msft-inst42",
        experiment_name="retrain-msft",
        ticker="MSFT",
        data=data,
        instance_id="inst-42",
        code_version="0.1.0",
        champion=champion,
        hyperparameters={"max_epochs": 5},
    )


def _csv(tmp_path: Path) -> Path:
    csv = tmp_path / "msft-daily.csv"
    csv.write_text("Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1.5,100\n")
    return csv


def _seed_job(arm: ArmTransport, name: str, status: str) -> None:
    arm.store[f"{WS_PATH}/jobs/{name}"] = {
        "id": f"{WS_PATH}/jobs/{name}",
        "name": name,
        "type": "Microsoft.MachineLearningServices/workspaces/jobs",
        "properties": {
            "jobType": "Command",
            "status": status,
            "command": "python train.py",
            "environmentId": "azureml:env:1",
            "computeId": "cpu-cluster",
            "experimentName": "e",
            "tags": {"orchestration_instance_id": "inst-42"},
        },
        "systemData": {"createdAt": "2026-01-05T01:00:00Z", "lastModifiedAt": "2026-01-05T01:00:00Z"},
    }


# ---- data ---------------------------------------------------------------------------------------
def test_register_data_uploads_the_csv_and_creates_the_version(platform, arm, tmp_path):
    csv = _csv(tmp_path)
    asset = platform.register_data("msft-daily", "5f2c9a", str(csv), {"ticker": "MSFT", "sha256": "ab"})

    assert (asset.name, asset.version, asset.uri) == ("msft-daily", "5f2c9a", "azureml:msft-daily:5f2c9a")
    [probe] = arm.find("GET", r"/data/msft-daily/versions/5f2c9a$")
    assert probe.path.startswith(WS_PATH) and probe.api_version
    assert arm.find("GET", r"/datastores/workspaceblobstore$") and arm.find("POST", r"/listSecrets$")
    uploads = [
        c
        for c in arm.calls
        if c.method == "PUT"
        and c.host.endswith(".blob.core.windows.net")
        and c.path.endswith("/msft-daily.csv")
        and not c.query
    ]
    assert uploads and uploads[0].body == csv.read_bytes()
    [put] = arm.find("PUT", r"/data/msft-daily/versions/5f2c9a$")
    assert put.api_version and put.path == f"{WS_PATH}/data/msft-daily/versions/5f2c9a"
    assert put.body["properties"]["dataType"] == "uri_file"
    assert put.body["properties"]["tags"] == {"ticker": "MSFT", "sha256": "ab"}
    assert put.body["properties"]["dataUri"].endswith("/msft-daily.csv")

    # Same name and version again: the existing version is returned, nothing is uploaded or created.
    before = len(arm.calls)
    again = platform.register_data("msft-daily", "5f2c9a", str(csv), {"ticker": "MSFT"})
    assert again.version == "5f2c9a"
    assert [c.method for c in arm.calls[before:]] == ["GET"]


def test_register_data_rejects_a_missing_file(platform, tmp_path):
    with pytest.raises(PlatformError, match="not a file"):
        platform.register_data("msft-daily", "1", str(tmp_path / "nope.csv"), {})


# ---- training -----------------------------------------------------------------------------------
def test_submit_training_creates_cluster_uploads_code_and_submits_the_job(platform, arm, tmp_path):
    data = platform.register_data("msft-daily", "5f2c9a", str(_csv(tmp_path)), {}).to_dict()
    name = platform.submit_training(_request(data, {"name": "msft-forecaster", "version": "3"}))
    assert name == "retrain-msft-inst42"

    [compute] = arm.find("PUT", r"/computes/cpu-cluster$")
    scale = compute.body["properties"]["properties"]["scaleSettings"]
    assert (scale["minNodeCount"], scale["maxNodeCount"]) == (0, 3)
    assert compute.body["location"] == "westeurope"  # taken from the workspace
    assert arm.find("POST", r"/codes/[^/]+/versions/1/startPendingUpload$")
    uploaded = {c.path for c in arm.calls if c.method == "PUT" and c.host.endswith(".blob.core.windows.net")}
    assert any(path.endswith(("/trainer/train.py", "/trainer/forecast_net.py")) for path in uploaded)
    # The job's code is the assembled folder: the trainer with the kit copied in (as the local jobs run).
    assert any(path.endswith("/trainer/trainer_kit/batch.py") for path in uploaded)
    [job] = arm.find("PUT", rf"^{WS_PATH}/jobs/retrain-msft-inst42$")
    assert job.api_version
    props = job.body["properties"]
    assert props["jobType"] == "Command" and props["experimentName"] == "retrain-msft"
    assert props["command"] == (
        "python train.py --data ${{inputs.data}} --output ${{outputs.output}} "
        "--champion-model ${{inputs.champion}} --param max_epochs=${{inputs.param_max_epochs}}"
    )
    assert props["computeId"] == f"{WS_PATH}/computes/cpu-cluster"
    assert props["codeId"].startswith(f"{WS_PATH}/codes/")
    assert "/environments/" in props["environmentId"]
    assert props["inputs"]["data"] == {
        "uri": f"{WS_PATH}/data/msft-daily/versions/5f2c9a",
        "jobInputType": "uri_file",
    }
    assert props["inputs"]["champion"] == {
        "uri": f"{WS_PATH}/models/msft-forecaster/versions/3",
        "jobInputType": "mlflow_model",
    }
    assert props["outputs"]["output"]["jobOutputType"] == "uri_folder"
    assert props["tags"]["orchestration_instance_id"] == "inst-42"
    assert {k: props["tags"][k] for k in ("ticker", "data_asset", "data_version")} == {
        "ticker": "MSFT",
        "data_asset": "msft-daily",
        "data_version": "5f2c9a",
    }
    [env] = arm.find("PUT", r"/environments/[^/]+/versions/[^/]+$")
    assert env.body["properties"]["image"].startswith("mcr.microsoft.com/azureml/")
    assert "condaFile" in env.body["properties"]

    # The activity runs again: the job exists, nothing is submitted twice.
    before = len(arm.calls)
    assert platform.submit_training(_request(data)) == "retrain-msft-inst42"
    assert [(c.method, c.path.rsplit("/", 2)[-2]) for c in arm.calls[before:]] == [("GET", "jobs")]


def test_existing_cluster_is_not_recreated(platform, arm, tmp_path):
    arm.store[f"{WS_PATH}/computes/cpu-cluster"] = {
        "id": f"{WS_PATH}/computes/cpu-cluster",
        "name": "cpu-cluster",
        "location": "westeurope",
        "properties": {
            "computeType": "AmlCompute",
            "provisioningState": "Succeeded",
            "properties": {
                "vmSize": "STANDARD_DS3_V2",
                "scaleSettings": {"minNodeCount": 0, "maxNodeCount": 2},
            },
        },
    }
    data = platform.register_data("msft-daily", "1", str(_csv(tmp_path)), {}).to_dict()
    platform.submit_training(_request(data))
    assert not arm.find("PUT", r"/computes/")
    assert arm.find("PUT", r"/jobs/retrain-msft-inst42$")


@pytest.mark.parametrize("azure_status", sorted(JOB_STATUSES))
def test_get_job_maps_every_azure_status(platform, arm, azure_status):
    _seed_job(arm, "job-1", azure_status)
    status = platform.get_job("job-1")
    [get] = arm.find("GET", r"/jobs/job-1$")
    assert get.path == f"{WS_PATH}/jobs/job-1" and get.api_version
    assert status.status == azure_status
    assert status.terminal == (azure_status in JOB_TERMINAL_STATUSES)
    assert (status.error is not None) == (azure_status in JOB_TERMINAL_STATUSES - {"Completed"})


def test_job_status_vocabulary():
    assert map_job_status("cancelled") == "Canceled"
    assert map_job_status("SomethingNew") == "Unknown"
    assert map_job_status(None) == "Unknown"


def test_get_job_of_a_missing_job_is_a_clear_error(platform):
    with pytest.raises(PlatformError, match="does not exist"):
        platform.get_job("never-submitted")


def test_cancel_job_posts_the_cancel_of_a_running_job(platform, arm):
    _seed_job(arm, "job-1", "Running")
    status = platform.cancel_job("job-1")
    [cancel] = arm.find("POST", r"/jobs/job-1/cancel$")
    assert cancel.path == f"{WS_PATH}/jobs/job-1/cancel" and cancel.api_version
    # Not waited on: Azure ML reports CancelRequested until the job has stopped (the SDK's poller may
    # have seen the operation end meanwhile: Canceled).
    assert status is not None and status.status in ("CancelRequested", "Canceled")


@pytest.mark.parametrize("ended", ["Completed", "Failed", "Canceled", "CancelRequested"])
def test_cancel_job_of_an_ended_job_sends_no_cancel(platform, arm, ended):
    _seed_job(arm, "job-1", ended)
    status = platform.cancel_job("job-1")
    assert status is not None and status.status == ended
    assert not arm.find("POST", r"/cancel$")


def test_cancel_job_of_a_missing_job_is_none(platform, arm):
    assert platform.cancel_job("never-submitted") is None
    assert not arm.find("POST", r"/cancel$")


def test_metrics_come_from_the_workspace_mlflow_rest_api(platform, arm):
    arm.store["mlflow-runs"] = {
        "job-1": {
            "info": {"run_id": "job-1", "status": "FINISHED"},
            "data": {
                "metrics": [
                    {"key": "mae", "value": 2.5, "timestamp": 1, "step": 0},
                    {"key": "mae", "value": 1.25, "timestamp": 2, "step": 1},  # the latest value wins
                    {"key": "naive_mae", "value": 1.5, "timestamp": 2, "step": 0},
                ]
            },
        }
    }
    assert platform.get_job_metrics("job-1") == {"mae": 1.25, "naive_mae": 1.5}
    [call] = [c for c in arm.calls if "mlflow" in c.path]
    assert call.host == "westeurope.api.azureml.ms"
    # v1.0 as ARM reports it; v2.0 where azureml-mlflow is installed (the dev venv: the SDK then asks
    # azureml.mlflow for the URI, which rewrites it for MLflow >= 2). The Function App has no azureml-mlflow.
    assert call.path in {f"/mlflow/v{v}{WS_PATH}/api/2.0/mlflow/runs/get" for v in ("1.0", "2.0")}
    assert call.query == {"run_id": ["job-1"]}
    assert call.headers["Authorization"] == "Bearer offline-test-token"
    with pytest.raises(PlatformError, match="no MLflow run"):
        platform.get_job_metrics("job-2")


# ---- models -------------------------------------------------------------------------------------
def test_register_model_from_job_artifacts_is_idempotent_by_job(platform, arm):
    ref = platform.register_model("msft-forecaster", "job-1", {"data_version": "5f2c9a"})
    assert (ref.name, ref.version) == ("msft-forecaster", "1")
    [put] = arm.find("PUT", r"/models/msft-forecaster/versions/1$")
    assert put.path == f"{WS_PATH}/models/msft-forecaster/versions/1" and put.api_version
    assert put.body["properties"]["modelType"] == "mlflow_model"
    assert put.body["properties"]["modelUri"] == "azureml://jobs/job-1/outputs/artifacts/paths/model/"
    assert put.body["properties"]["tags"] == {"data_version": "5f2c9a", "job_name": "job-1"}

    assert platform.register_model("msft-forecaster", "job-1", {}).version == "1"  # same job: same version
    assert len(arm.find("PUT", r"/models/")) == 1
    assert platform.register_model("msft-forecaster", "job-2", {}).version == "2"


def test_register_model_carries_the_fit_ends_the_trainer_set_on_its_run(platform, arm):
    arm.store["mlflow-runs"] = {
        "job-1": {
            "info": {"run_id": "job-1", "status": "FINISHED"},
            "data": {
                "tags": [
                    {"key": "fitted_data_end", "value": "2013-03-01"},
                    {"key": "evaluation_fit_end", "value": "2011-12-09"},
                    {"key": "data_file", "value": "msft-daily.csv"},  # a run tag, not a model tag
                ]
            },
        },
        "job-2": {"info": {"run_id": "job-2", "status": "FINISHED"}, "data": {"tags": []}},
    }
    platform.register_model("msft-forecaster", "job-1", {"data_version": "5f2c9a"})
    [put] = arm.find("PUT", r"/models/msft-forecaster/versions/1$")
    assert put.body["properties"]["tags"] == {
        "data_version": "5f2c9a",
        "job_name": "job-1",
        TAG_FITTED_DATA_END: "2013-03-01",
        TAG_EVALUATION_FIT_END: "2011-12-09",
    }
    reads = [c for c in arm.calls if c.path.endswith("/api/2.0/mlflow/runs/get")]
    assert [c.query for c in reads] == [{"run_id": ["job-1"]}]
    # A job whose run has no fit ends (a trainer from before the refit) registers without them.
    platform.register_model("msft-forecaster", "job-2", {})
    [put] = arm.find("PUT", r"/models/msft-forecaster/versions/2$")
    assert put.body["properties"]["tags"] == {"job_name": "job-2"}


def test_champion_tag_moves_between_versions(platform, arm):
    assert platform.get_champion("msft-forecaster") is None
    first = platform.register_model("msft-forecaster", "job-1", {})
    second = platform.register_model("msft-forecaster", "job-2", {})
    platform.set_champion(first)
    assert platform.get_champion("msft-forecaster").version == "1"
    platform.set_champion(second)
    champion = platform.get_champion("msft-forecaster")
    assert (champion.version, champion.tags["champion"]) == ("2", "true")
    stored = {
        k.rsplit("/", 1)[-1]: v["properties"]["tags"]
        for k, v in arm.store.items()
        if "/models/msft-forecaster/versions/" in k
    }
    assert "champion" not in stored["1"] and stored["2"]["champion"] == "true"
    assert stored["2"]["job_name"] == "job-2"  # the lineage tags survive the update


# ---- endpoint and deployments -------------------------------------------------------------------
def test_endpoint_create_is_key_auth_and_idempotent(platform, arm):
    state = platform.begin_create_endpoint("retrain-msft")
    assert state.state == "Creating"
    [put] = arm.find("PUT", r"/onlineEndpoints/retrain-msft$")
    assert put.path == f"{WS_PATH}/onlineEndpoints/retrain-msft" and put.api_version
    assert put.body["properties"]["authMode"] == "Key"
    assert put.body["location"] == "westeurope"
    again = platform.begin_create_endpoint("retrain-msft")
    assert again.state == "Succeeded" and again.scoring_uri == f"https://{SCORING_HOST}/score"
    assert len(arm.find("PUT", r"/onlineEndpoints/retrain-msft$")) == 1


def test_get_endpoint_of_a_missing_endpoint_is_not_found(platform):
    assert platform.get_endpoint("retrain-none").state == "NotFound"


def test_deployment_create_then_traffic_then_delete(platform, arm):
    platform.begin_create_endpoint("retrain-msft")
    model = ModelRef("msft-forecaster", "4")
    state = platform.begin_deployment("retrain-msft", "green", model)
    assert (state.state, state.model["version"]) == ("Creating", "4")
    [put] = arm.find("PUT", r"/onlineEndpoints/retrain-msft/deployments/green$")
    assert put.api_version
    props = put.body["properties"]
    assert props["model"] == f"{WS_PATH}/models/msft-forecaster/versions/4"
    assert props["codeConfiguration"]["scoringScript"] == "score.py"
    assert props["codeConfiguration"]["codeId"].startswith(f"{WS_PATH}/codes/")
    assert props["instanceType"] == "Standard_DS3_v2" and props["endpointComputeType"] == "Managed"
    assert put.body["sku"]["capacity"] == 1
    assert any(
        c.path.endswith("/scorer/score.py")
        for c in arm.calls
        if c.method == "PUT" and c.host.endswith(".blob.core.windows.net")
    )

    # Running the activity again while the same model rolls out does not redeploy.
    assert platform.begin_deployment("retrain-msft", "green", model).state == "Succeeded"
    assert len(arm.find("PUT", r"/deployments/green$")) == 1
    assert platform.get_endpoint("retrain-msft").deployments == {
        "green": {"name": "msft-forecaster", "version": "4", "tags": {}}
    }

    endpoint = platform.set_traffic("retrain-msft", {"green": 100})
    assert endpoint.traffic == {"green": 100}
    traffic_put = arm.find("PUT", r"/onlineEndpoints/retrain-msft$")[-1]
    assert traffic_put.body["properties"]["traffic"] == {"green": 100}
    assert traffic_put.body["properties"]["authMode"] == "Key"

    deleting = platform.begin_delete_deployment("retrain-msft", "green")
    assert deleting.state == "Deleting"
    [delete] = arm.find("DELETE", r"/deployments/green$")
    assert delete.path == f"{WS_PATH}/onlineEndpoints/retrain-msft/deployments/green" and delete.api_version


def test_delete_of_a_missing_slot_sends_nothing(platform, arm):
    assert platform.begin_delete_deployment("retrain-msft", "blue").state == "NotFound"
    assert not arm.find("DELETE", r".")


@pytest.mark.parametrize(
    "azure_state,port_state",
    [
        ("Creating", "Creating"),
        ("Updating", "Updating"),
        ("Scaling", "Updating"),
        ("Succeeded", "Succeeded"),
        ("Failed", "Failed"),
        ("Canceled", "Failed"),
        ("Deleting", "Deleting"),
    ],
)
def test_deployment_states_are_mapped(platform, arm, azure_state, port_state):
    platform.begin_create_endpoint("retrain-msft")
    platform.begin_deployment("retrain-msft", "blue", ModelRef("msft-forecaster", "1"))
    arm.store[f"{WS_PATH}/onlineEndpoints/retrain-msft/deployments/blue"]["properties"][
        "provisioningState"
    ] = azure_state
    state = platform.get_deployment("retrain-msft", "blue")
    assert state.state == port_state
    assert state.model == {"name": "msft-forecaster", "version": "1", "tags": {}}
    assert (state.error is not None) == (port_state == "Failed")
    assert platform.get_deployment("retrain-msft", "green").state == "NotFound"


def test_invalid_traffic_is_rejected_before_any_call(platform, arm):
    for bad in ({"blue": 50, "green": 40}, {"red": 100}, {"blue": 110, "green": -10}):
        with pytest.raises(PlatformError, match="sum to 100"):
            platform.set_traffic("retrain-msft", bad)
    assert not arm.calls


def test_invoke_pins_the_slot_only_when_asked(platform, arm):
    platform.begin_create_endpoint("retrain-msft")
    platform.begin_deployment("retrain-msft", "blue", ModelRef("msft-forecaster", "1"))
    arm.scoring_answer = {
        "forecast": [101.5],
        "model": {"name": "msft-forecaster", "version": "1", "window": 20},
    }
    answer = platform.invoke("retrain-msft", {"close": [100.0] * 20}, slot="blue")
    assert answer["forecast"] == [101.5]
    [score] = [c for c in arm.calls if c.host == SCORING_HOST]
    assert score.method == "POST" and score.body == {"close": [100.0] * 20}
    assert score.headers["azureml-model-deployment"] == "blue"
    assert score.headers["Authorization"] == "Bearer pk-retrain-msft"  # the endpoint key from listKeys

    platform.set_traffic("retrain-msft", {"blue": 100})  # unpinned requests need a slot with traffic
    platform.invoke("retrain-msft", {"close": [100.0] * 20})
    last = [c for c in arm.calls if c.host == SCORING_HOST][-1]
    assert "azureml-model-deployment" not in last.headers


# ---- errors and retries -------------------------------------------------------------------------
def test_throttling_is_retried_by_azure_core(platform, arm):
    _seed_job(arm, "job-1", "Running")
    arm.fail_next = [(429, {"Retry-After": "0"}), (503, {})]
    assert platform.get_job("job-1").status == "Running"
    assert len(arm.find("GET", r"/jobs/job-1$")) == 3  # two failures, then the answer


def test_persistent_server_errors_become_transient_platform_errors(platform, arm):
    arm.fail_next = [(503, {})] * 20
    with pytest.raises(TransientPlatformError, match="HTTP 503"):
        platform.get_job("job-1")
    # The first try, then azure-core's status retries (retry_status), each after a back-off.
    assert len(arm.find("GET", r"/jobs/job-1$")) == 1 + RETRY_OPTIONS["retry_status"]


def test_forbidden_is_a_permanent_platform_error(platform, arm):
    arm.fail_next = [(403, {})]
    with pytest.raises(PlatformError) as info:
        platform.get_job("job-1")
    assert not isinstance(info.value, TransientPlatformError)
    assert len(arm.find("GET", r"/jobs/job-1$")) == 1


def test_missing_workspace_settings_name_what_to_set():
    with pytest.raises(
        PlatformError, match="AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP, AZUREML_WORKSPACE_NAME"
    ):
        AzureMLPlatform(environ={}, credential=StaticTokenCredential())


def test_the_adapter_implements_the_port(platform):
    from retrain.ports import MLPlatform

    assert isinstance(platform, MLPlatform)
