"""The azureml adapter reads a job's test_errors.json artifact through the real SDK objects (datastore
from ARM, blob download with the platform's credential), answered by the recording transport."""

from __future__ import annotations

import json

import pytest

from retrain.ports import PlatformError, TransientPlatformError
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


@pytest.mark.parametrize("status", [403, 401])
def test_an_unreadable_artifact_is_a_permanent_error_naming_the_status(platform, arm, status) -> None:
    arm.blobs[f"/{ARTIFACT_CONTAINER}/ExperimentRun/dcid.job-1/test_errors.json"] = b"{}"
    arm.blob_errors[f"/{ARTIFACT_CONTAINER}/ExperimentRun/dcid.job-1/test_errors.json"] = status
    with pytest.raises(PlatformError, match=f"HTTP {status}") as raised:
        platform.get_job_test_errors("job-1")
    assert not isinstance(raised.value, TransientPlatformError)  # a retry would not fix a missing role


def test_a_cycle_whose_test_errors_answer_403_is_gated_with_the_fixed_margin_and_warns(
    platform, arm, use_adapters
) -> None:
    """The role on the artifact store not yet propagated (or a storage firewall): Storage answers 403 to
    the download. The cycle does not fail after its training: the gate judges with its fixed margins (as
    for a trainer without test_errors.json) and the cycle's status and output carry the warning."""
    from retrain import activities
    from tests.unit.test_workflow import JOB, World, completed_event, drive

    arm.store[f"{WS_PATH}/jobs/{JOB}"] = {**arm.store[f"{WS_PATH}/jobs/job-1"], "name": JOB}
    arm.blob_errors[f"/{ARTIFACT_CONTAINER}/ExperimentRun/dcid.{JOB}/test_errors.json"] = 403
    use_adapters(platform=platform)

    class AzureTestErrors(World):
        def get_job_test_errors(self, p):  # the real activity, over the azureml adapter
            return activities.get_job_test_errors(p)

    out = drive(AzureTestErrors(events=[completed_event()]))
    assert out.error is None, out.error
    assert out.output["status"] == "deployed"
    [warning] = out.output["warnings"]
    assert f"test_errors.json of job {JOB} could not be read" in warning and "HTTP 403" in warning
    assert out.status["warnings"] == [warning]
    assert "fixed margin" in " ".join(out.output["gate"]["reasons"])
    assert arm.find("GET", rf"dcid\.{JOB}/test_errors\.json$")  # it was asked, and refused
