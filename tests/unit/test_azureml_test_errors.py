"""The azureml adapter reads a job's test_errors.json artifact through the real SDK objects (datastore
from ARM, blob download with the platform's credential), answered by the recording transport."""

from __future__ import annotations

import json

import pytest

from retrain.ports import PlatformError
from tests.unit.azure_recording_transport import (
    STORAGE_ACCOUNT,
    WS_PATH,
    ArmTransport,
)

ARTIFACT_CONTAINER = "azureml"


@pytest.fixture()
def arm(arm: ArmTransport) -> ArmTransport:
    """tests/unit/conftest.py's recording transport, with a workspace artifact store and two jobs."""
    transport = arm
    # The workspace's artifact store, as every workspace has it (container "azureml", identity access).
    transport.store[f"{WS_PATH}/datastores/workspaceartifactstore"] = {
        "id": f"{WS_PATH}/datastores/workspaceartifactstore",
        "name": "workspaceartifactstore",
        "type": "Microsoft.MachineLearningServices/workspaces/datastores",
        "properties": {
            "credentials": {"credentialsType": "None"},
            "datastoreType": "AzureBlob",
            "accountName": STORAGE_ACCOUNT,
            "containerName": ARTIFACT_CONTAINER,
            "endpoint": "core.windows.net",
            "protocol": "https",
            "isDefault": False,
        },
    }
    for name in ("job-1", "job-2"):
        transport.store[f"{WS_PATH}/jobs/{name}"] = {
            "id": f"{WS_PATH}/jobs/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/jobs",
            "properties": {
                "jobType": "Command",
                "status": "Completed",
                "command": "python train.py",
                "environmentId": "azureml:env:1",
                "computeId": "cpu-cluster",
                "experimentName": "e",
            },
            "systemData": {"createdAt": "2026-01-05T01:00:00Z", "lastModifiedAt": "2026-01-05T01:00:00Z"},
        }
    return transport


def test_test_errors_are_downloaded_from_the_jobs_artifact_folder(platform, arm) -> None:
    payload = {"dates": ["2013-02-28"], "actual": [27.8], "model": [27.7], "naive": [27.9], "champion": None}
    arm.blobs[f"/{ARTIFACT_CONTAINER}/ExperimentRun/dcid.job-1/test_errors.json"] = json.dumps(
        payload
    ).encode()
    assert platform.get_job_test_errors("job-1") == payload
    [download] = [c for c in arm.calls if c.host.endswith(".blob.core.windows.net") and c.method == "GET"]
    assert download.host == f"{STORAGE_ACCOUNT}.blob.core.windows.net"
    assert download.path == f"/{ARTIFACT_CONTAINER}/ExperimentRun/dcid.job-1/test_errors.json"
    assert download.headers["Authorization"] == "Bearer offline-test-token"  # identity, not an account key
    assert not arm.find("POST", r"listSecrets")


def test_a_job_without_the_artifact_has_none_and_an_unknown_job_is_an_error(platform, arm) -> None:
    assert platform.get_job_test_errors("job-2") is None
    with pytest.raises(PlatformError, match="does not exist"):
        platform.get_job_test_errors("never-submitted")
