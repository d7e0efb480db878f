"""Model bundles in the azureml adapter, through the real azure-ai-ml SDK and the recording transport
(tests/unit/azure_recording_transport.py): the changed models and the parent bundle are downloaded with
`models.download`, the folder is built and registered as a custom model (its files uploaded to the
workspace's blob store, then the PUT of the model version with short tags), `get_bundle` reads only the
registered bundle.json, and a deployment of the bundle references `azureml:<bundle>:<version>`."""

from __future__ import annotations

import json

import pytest

from retrain.bundles import parse_manifest
from retrain.ports import MLPlatform, ModelRef, PlatformError
from tests.unit.azure_recording_transport import CONTAINER, RG, SUB, WS, WS_PATH, ArmTransport

ENDPOINT = "fleet-models"
BUNDLE = "fleet-models-bundle"


def _seed_model(arm: ArmTransport, name: str, version: str, family: str, fitted: str) -> ModelRef:
    """A registered MLflow model version as Azure ML reports it (its files in the workspace blob store)."""
    folder = f"ExperimentRun/dcid.train-{name}-{version}/model"
    arm.store[f"{WS_PATH}/models/{name}/versions/{version}"] = {
        "id": f"{WS_PATH}/models/{name}/versions/{version}",
        "name": version,
        "type": "Microsoft.MachineLearningServices/workspaces/models/versions",
        "properties": {
            "modelType": "mlflow_model",
            "flavors": {"python_function": {"data": {"loader_module": "mlflow.pyfunc.model"}}},
            "modelUri": f"azureml://subscriptions/{SUB}/resourcegroups/{RG}/workspaces/{WS}/datastores/"
            f"workspaceblobstore/paths/{folder}",
            "tags": {"model_family": family, "fitted_data_end": fitted, "job_name": f"train-{name}"},
        },
    }
    for file, content in {
        "MLmodel": f"flavors: {{python_function: {{}}}}\nmetadata: {{window: 5, v: '{name}:{version}'}}\n",
        "python_model.pkl": f"weights of {name}:{version}",
    }.items():
        arm.blobs[f"/{CONTAINER}/{folder}/{file}"] = content.encode()
    return ModelRef(name, version)


@pytest.fixture()
def models(arm: ArmTransport) -> dict[str, ModelRef]:
    return {
        "MSFT": _seed_model(arm, "forecast-msft", "3", "ridge", "2026-12-04"),
        "BRK.B": _seed_model(arm, "forecast-brk-b", "1", "lstm", "2026-12-03"),
        "MSFT-new": _seed_model(arm, "forecast-msft", "4", "ridge", "2026-12-05"),
    }


def _uploads(arm: ArmTransport, since: int = 0) -> dict[str, bytes]:
    """Blob path -> bytes of the files uploaded (PUT without `comp`) after call number `since`."""
    return {  # the transport records a JSON body decoded (bundle.json): encoded back here
        c.path: c.body if isinstance(c.body, bytes) else json.dumps(c.body).encode()
        for c in arm.calls[since:]
        if c.method == "PUT" and c.host.endswith(".blob.core.windows.net") and not c.query
    }


def test_the_adapter_registers_bundles(platform):
    assert isinstance(platform, MLPlatform)


def test_register_bundle_downloads_builds_and_registers_a_custom_model(platform, arm, models):
    first = platform.register_bundle(
        ENDPOINT,
        "1",
        None,
        {"MSFT": models["MSFT"], "BRK.B": models["BRK.B"]},
        ["retrain-msft-1", "retrain-brk-b-1"],
    )
    assert (first.name, first.version, first.parent_version, first.changed) == (
        BUNDLE,
        "1",
        None,
        ["BRK.B", "MSFT"],
    )
    assert first.tickers["BRK.B"] == {
        "model_name": "forecast-brk-b",
        "model_version": "1",
        "family": "lstm",
        "fitted_data_end": "2026-12-03",
    }
    # Asked first (404), then each changed model downloaded by the SDK from the datastore.
    assert arm.find("GET", rf"/models/{BUNDLE}/versions/1$")
    listed = [c.query.get("prefix", [""])[0] for c in arm.calls if c.query.get("comp") == ["list"]]
    assert any(p.startswith("ExperimentRun/dcid.train-forecast-msft-3/model") for p in listed)

    [put] = arm.find("PUT", rf"/models/{BUNDLE}/versions/1$")
    props = put.body["properties"]
    assert props["modelType"] == "custom_model"
    assert props["tags"] == {
        "bundle": "true",
        "endpoint": ENDPOINT,
        "changed": "BRK.B,MSFT",
        "orchestration_ids": "retrain-msft-1,retrain-brk-b-1",
        "tickers": "2",
    }
    assert "/datastores/workspaceblobstore/paths/" in props["modelUri"]
    uploaded = _uploads(arm)
    [manifest_path] = [p for p in uploaded if p.endswith("/bundle.json")]
    folder = manifest_path.rsplit("/", 1)[0]
    assert props["modelUri"].rstrip("/").endswith(folder.split("/", 2)[2])  # the uploaded folder
    assert uploaded[f"{folder}/models/msft/python_model.pkl"] == b"weights of forecast-msft:3"
    assert parse_manifest(json.loads(uploaded[manifest_path])).tickers["MSFT"].model_version == "3"

    # get_bundle reads the manifest only: one blob download, no model file.
    before = len(arm.calls)
    assert platform.get_bundle(ENDPOINT, "1") == first
    reads = [
        c.path for c in arm.calls[before:] if c.method == "GET" and c.host.endswith(".blob.core.windows.net")
    ]
    assert reads == [manifest_path]
    assert platform.get_bundle(ENDPOINT, "7") is None


def test_a_replayed_register_returns_the_version_and_other_content_is_refused(platform, arm, models):
    changes = {"MSFT": models["MSFT"], "BRK.B": models["BRK.B"]}
    first = platform.register_bundle(ENDPOINT, "1", None, changes, ["retrain-msft-1"])
    again = platform.register_bundle(ENDPOINT, "1", None, changes, ["retrain-msft-1"])
    assert again == first and len(arm.find("PUT", rf"/models/{BUNDLE}/versions/")) == 1
    with pytest.raises(PlatformError, match=r"already exists with other content \(tickers \['MSFT'\]"):
        platform.register_bundle(ENDPOINT, "1", None, {**changes, "MSFT": models["MSFT-new"]}, ["x"])
    assert len(arm.find("PUT", rf"/models/{BUNDLE}/versions/")) == 1


def test_the_next_version_is_the_parent_with_the_changed_ticker_replaced(platform, arm, models):
    first = platform.register_bundle(
        ENDPOINT, "1", None, {"MSFT": models["MSFT"], "BRK.B": models["BRK.B"]}, ["retrain-msft-1"]
    )
    before = len(arm.calls)
    second = platform.register_bundle(ENDPOINT, "2", first, {"MSFT": models["MSFT-new"]}, ["retrain-msft-2"])
    assert second.parent_version == "1" and second.changed == ["MSFT"]
    assert second.model_of("MSFT") == ModelRef("forecast-msft", "4")
    assert second.tickers["BRK.B"] == first.tickers["BRK.B"]
    [put] = arm.find("PUT", rf"/models/{BUNDLE}/versions/2$")
    assert put.body["properties"]["tags"]["parent_version"] == "1"
    assert put.body["properties"]["tags"]["changed"] == "MSFT"
    uploaded = _uploads(arm, before)
    manifest_path = next(p for p in uploaded if p.endswith("/bundle.json"))
    folder, paths = (
        manifest_path.rsplit("/", 1)[0],
        {t: e.path for t, e in parse_manifest(json.loads(uploaded[manifest_path])).tickers.items()},
    )
    assert (
        uploaded[f"{folder}/{paths['BRK.B']}/python_model.pkl"] == b"weights of forecast-brk-b:1"
    )  # from v1
    assert uploaded[f"{folder}/{paths['MSFT']}/python_model.pkl"] == b"weights of forecast-msft:4"


def test_a_bundle_deploys_as_its_registered_model_and_reads_back_as_a_bundle(platform, arm, models):
    bundle = platform.register_bundle(ENDPOINT, "1", None, {"MSFT": models["MSFT"]}, ["retrain-msft-1"])
    platform.begin_create_endpoint(ENDPOINT)
    state = platform.begin_deployment(ENDPOINT, "blue", bundle.as_model())
    assert state.model == bundle.as_model().to_dict()
    [put] = arm.find("PUT", rf"/onlineEndpoints/{ENDPOINT}/deployments/blue$")
    assert put.body["properties"]["model"] == f"{WS_PATH}/models/{BUNDLE}/versions/1"
    assert put.body["properties"]["codeConfiguration"]["scoringScript"] == "score.py"
    assert put.body["tags"] == {"model": f"{BUNDLE}:1", "bundle": "true"}

    assert platform.get_endpoint(ENDPOINT).deployments == {"blue": bundle.as_model().to_dict()}
    assert platform.get_deployment(ENDPOINT, "blue").model == bundle.as_model().to_dict()
    # The activity running again while the bundle rolls out sends nothing new.
    platform.begin_deployment(ENDPOINT, "blue", bundle.as_model())
    assert len(arm.find("PUT", r"/deployments/blue$")) == 1
    # (A single model deploys without the bundle tag: test_azureml_rest.test_deployment_create_then_traffic_then_delete.)
