"""The Function App's Azure clients are built once per process: the MLflow REST client (on the `/mlflow/v2.0/`
route azureml-mlflow uses), the artifact store's Blob client and the monitor's Table clients share one
credential and keep its token, so the identity endpoint is not asked on every call. Through the real
azure-ai-ml, azure-storage-blob and azure-data-tables clients and the recording transports; the credential
is a double that counts its token requests (it stands in for Azure identity)."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken, AccessTokenInfo

from retrain.adapters import get_forecast_log, get_ledger
from retrain.azureml import client as azure_client
from retrain.azureml.platform import AzureMLPlatform
from retrain.monitoring import tables
from retrain.monitoring.forecast_log import FORECAST_TABLE_NAME
from retrain.monitoring.ledger import TABLE_NAME, LedgerError, SlotRecord, TrafficEvent
from tests.unit.azure_recording_transport import (
    MLFLOW_HOST,
    STORAGE_ACCOUNT,
    WORKSPACE_ENV,
    WS_PATH,
    ArmTransport,
    code_root,
)
from tests.unit.table_recording_transport import TableTransport


class CountingCredential:
    """A token credential that records every token request (the identity endpoint's work)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, ...]] = []
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        with self._lock:
            self.requests.append(scopes)
        return AccessToken("offline-test-token", int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        with self._lock:
            self.requests.append(scopes)
        return AccessTokenInfo("offline-test-token", int(time.time()) + 3600)


def _job(name: str, default_output: str | None = None) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "jobType": "Command",
        "status": "Completed",
        "command": "python train.py",
        "environmentId": "azureml:env:1",
        "computeId": "cpu-cluster",
        "experimentName": "e",
    }
    if default_output:  # as Azure ML reports a job (Azure PowerShell's recorded Get-AzMLWorkspaceJob)
        properties["outputs"] = {"default": {"jobOutputType": "uri_folder", "uri": default_output}}
    return {
        "id": f"{WS_PATH}/jobs/{name}",
        "name": name,
        "type": "Microsoft.MachineLearningServices/workspaces/jobs",
        "properties": properties,
        "systemData": {"createdAt": "2026-01-05T01:00:00Z", "lastModifiedAt": "2026-01-05T01:00:00Z"},
    }


@pytest.fixture()
def counted(arm: ArmTransport, tmp_path: Path) -> tuple[AzureMLPlatform, CountingCredential]:
    arm.store[f"{WS_PATH}/datastores/workspaceartifactstore"] = {
        "id": f"{WS_PATH}/datastores/workspaceartifactstore",
        "name": "workspaceartifactstore",
        "type": "Microsoft.MachineLearningServices/workspaces/datastores",
        "properties": {
            "credentials": {"credentialsType": "None"},
            "datastoreType": "AzureBlob",
            "accountName": STORAGE_ACCOUNT,
            "containerName": "azureml",
            "endpoint": "core.windows.net",
            "protocol": "https",
            "isDefault": False,
        },
    }
    credential = CountingCredential()
    platform = AzureMLPlatform(
        environ=WORKSPACE_ENV, repo_root=code_root(tmp_path), credential=credential, transport=arm
    )
    return platform, credential


def test_mlflow_calls_use_the_v2_route_and_one_token(counted, arm, monkeypatch) -> None:
    # The Function App has no azureml-mlflow (requirements.txt): azure-ai-ml then reports the workspace's
    # tracking URI as ARM sends it, on the /mlflow/v1.0 route (with the package it rewrites it to v2.0).
    monkeypatch.setitem(sys.modules, "azureml.mlflow", None)
    platform, credential = counted
    platform.log_monitor_metrics("MSFT", "2012-07-02", {"mae_20": 0.5})
    first = len(credential.requests)
    for day, mae in (("2012-07-03", 0.6), ("2012-07-05", 0.7), ("2012-07-06", 0.8)):
        platform.log_monitor_metrics("MSFT", day, {"mae_20": mae})
    mlflow = [c for c in arm.calls if c.host == MLFLOW_HOST]
    assert len(mlflow) > 10
    assert all(c.path.startswith(f"/mlflow/v2.0{WS_PATH}/api/2.0/mlflow/") for c in mlflow)
    assert len(credential.requests) == first  # no token request after the first calls


def test_the_artifact_folder_is_the_jobs_outputs_default_and_the_blob_client_is_kept(counted, arm) -> None:
    platform, credential = counted
    # A job whose artifact folder is not named after the job: only outputs.default says where it is.
    arm.store[f"{WS_PATH}/jobs/job-3"] = _job(
        "job-3", "azureml://datastores/workspaceartifactstore/ExperimentRun/dcid.run-3a"
    )
    arm.store[f"{WS_PATH}/jobs/job-4"] = _job("job-4")  # no outputs reported: the artifact store's folder
    arm.blobs["/azureml/ExperimentRun/dcid.run-3a/test_errors.json"] = json.dumps({"dates": ["a"]}).encode()
    arm.blobs["/azureml/ExperimentRun/dcid.job-4/test_errors.json"] = json.dumps({"dates": ["b"]}).encode()
    assert platform.get_job_test_errors("job-3") == {"dates": ["a"]}
    assert platform.get_job_test_errors("job-4") == {"dates": ["b"]}
    blob_tokens = [s for s in credential.requests if s == ("https://storage.azure.com/.default",)]
    platform.get_job_test_errors("job-3")
    assert [s for s in credential.requests if s == ("https://storage.azure.com/.default",)] == blob_tokens
    assert len(blob_tokens) == 1


def test_table_clients_are_built_once_on_one_credential_at_the_configured_endpoint(monkeypatch) -> None:
    built: list[CountingCredential] = []

    def counting_default_credential(environ: Any = None) -> CountingCredential:
        built.append(CountingCredential())
        return built[-1]

    monkeypatch.setattr(azure_client, "default_credential", counting_default_credential)
    azure_client.reset_shared_credentials()
    tables.reset()
    env = {
        "RETRAIN_PLATFORM": "azureml",
        "AzureWebJobsStorage__accountName": "stretrainfunc",
        "AzureWebJobsStorage__tableServiceUri": "https://stretrainfunc.table.core.chinacloudapi.cn/",
    }
    transport = TableTransport()
    try:
        for name in (TABLE_NAME, FORECAST_TABLE_NAME):  # the first build takes the test's transport
            tables.table_client(name, env, transport=transport)
        for hour in range(3):
            get_ledger(env).append(
                TrafficEvent(
                    time=f"2026-01-05T0{hour}:00:00.000000Z",
                    endpoint="retrain-msft",
                    reason="operator",
                    slots=(SlotRecord("blue", 100, "msft-forecaster", "1"),),
                    event_id=f"e{hour}",
                )
            )
            get_forecast_log(env).record_retrain("MSFT", f"2026-01-0{hour + 5}", f"retrain-msft-{hour}", "ok")
        assert len(get_ledger(env).events("retrain-msft")) == 3
    finally:
        tables.reset()
        azure_client.reset_shared_credentials()
    assert {c.host for c in transport.calls} == {"stretrainfunc.table.core.chinacloudapi.cn"}
    assert len(built) == 1  # one credential for the process
    assert len(built[0].requests) == 2  # one token per table client, not per call


def test_the_table_endpoint_is_derived_from_the_account_or_refused_with_what_to_set() -> None:
    assert tables.table_endpoint({"AzureWebJobsStorage__accountName": "st1"}) == (
        "https://st1.table.core.windows.net"
    )
    with pytest.raises(LedgerError, match="AzureWebJobsStorage__tableServiceUri"):
        get_ledger({"RETRAIN_PLATFORM": "azureml"})
