"""Microsoft's Durable Functions Python samples (`samples-v2/` of Azure/azure-functions-durable-python), run
UNMODIFIED on the local host and driven through their HTTP starters as their READMEs say.

Set DURABLE_SAMPLES_DIR to a checkout's `samples-v2` folder to run them; without it they are skipped (the
repository is not vendored, and tests never reach the internet). tests/integration/test_durable_patterns.py
covers the same features with an app of our own, so CI tests the behaviour without the checkout.

Not run here: `openai_agents` (needs the openai-agents package and an OpenAI endpoint) and
`serialize_arguments` when its `shared_code/` folder is missing from the checkout.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from functions_host.functions import FunctionLoadError
from functions_host.host import HOST_URL_SETTING, LocalHost

SAMPLES_ENV = "DURABLE_SAMPLES_DIR"
TIMEOUT = 10
WAIT_S = 30.0
SAMPLES = Path(os.environ[SAMPLES_ENV]) if os.environ.get(SAMPLES_ENV) else None

pytestmark = pytest.mark.skipif(
    SAMPLES is None,
    reason=f"set {SAMPLES_ENV} to the samples-v2 folder of a checkout of "
    "github.com/Azure/azure-functions-durable-python to run Microsoft's samples on the local host",
)


def sample_dir(name: str) -> Path:
    assert SAMPLES is not None
    path = SAMPLES / name
    if not (path / "function_app.py").is_file():
        pytest.skip(f"{path}/function_app.py is not in this checkout of samples-v2")
    return path


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # whatever the host or a sample's local.settings.json adds to the environment is undone afterwards
    for name in (HOST_URL_SETTING, "AzureWebJobsStorage", "FUNCTIONS_WORKER_RUNTIME"):
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)


def running(app_dir: Path, state_dir: Path) -> LocalHost:
    return LocalHost(app_dir, state_dir, timers=False, out=io.StringIO()).start()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    hosts: list[LocalHost] = []

    def start(name: str | Path) -> LocalHost:
        app = name if isinstance(name, Path) else sample_dir(name)
        hosts.append(running(app, tmp_path / f"state-{app.name}"))
        return hosts[-1]

    yield start
    for host in hosts:
        host.stop()


def finished(status_url: str, timeout: float = WAIT_S) -> dict[str, Any]:
    return poll(status_url, lambda b: b["runtimeStatus"] in ("Completed", "Failed", "Terminated"), timeout)


def poll(status_url: str, predicate, timeout: float = WAIT_S) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = requests.get(status_url, timeout=TIMEOUT).json()
        if predicate(body):
            return body
        assert time.monotonic() < deadline, f"not reached within {timeout} s: {body}"
        time.sleep(0.05)


def check_status_payload(response: requests.Response) -> dict[str, str]:
    assert response.status_code == 202, response.text
    payload = response.json()
    assert {"statusQueryGetUri", "sendEventPostUri", "purgeHistoryDeleteUri", "suspendPostUri"} <= set(
        payload
    )
    return payload


def test_function_chaining(serve, tmp_path: Path) -> None:
    app = sample_dir("function_chaining")
    host_json = (app / "host.json").read_text() if (app / "host.json").is_file() else "{}"
    try:
        json.loads(host_json)
    except ValueError:
        # Upstream's host.json is two JSON documents back to back: the host refuses it, naming the file, as
        # `func start` does; the app itself then runs from a copy holding the first document.
        with pytest.raises(FunctionLoadError, match=f"{app / 'host.json'}: not valid JSON"):
            running(app, tmp_path / "refused")
        first_document, _ = json.JSONDecoder().raw_decode(host_json)
        app = tmp_path / "function_chaining"
        shutil.copytree(sample_dir("function_chaining"), app, ignore=shutil.ignore_patterns("__pycache__"))
        (app / "host.json").write_text(json.dumps(first_document))
    host = serve(app)
    payload = check_status_payload(
        requests.post(f"{host.url}/api/orchestrators/my_orchestrator", timeout=TIMEOUT)
    )
    status = finished(payload["statusQueryGetUri"])
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]


def test_blueprint(serve) -> None:
    host = serve("blueprint")  # a plain FunctionApp (function auth level) registering a durable Blueprint
    key = {"x-functions-key": host.function_key}
    assert requests.get(f"{host.url}/api/startOrchestrator", timeout=TIMEOUT).status_code == 401
    payload = check_status_payload(
        requests.get(f"{host.url}/api/startOrchestrator", headers=key, timeout=TIMEOUT)
    )
    assert finished(payload["statusQueryGetUri"])["output"] == [
        "Hello Tokyo!",
        "Hello Seattle!",
        "Hello London!",
    ]
    hello = requests.get(
        f"{host.url}/api/HttpTrigger", params={"name": "local"}, headers=key, timeout=TIMEOUT
    )
    assert hello.status_code == 200 and hello.text.startswith("Hello, local.")


def test_fan_in_fan_out_fans_out_but_needs_blob_storage(serve, tmp_path: Path) -> None:
    """The backup sample fans out one E2_CopyFileToBlob per file under E2_* folders; each copy uploads to Blob
    Storage (AzureWebJobsStorage), which the local host does not emulate: the fan-out is scheduled, the copies
    fail on the missing connection string, and the orchestrator fails with that error, as it would in Azure
    without a storage account. (An empty tree does not help: the SDK's task_all([]) yields None, so the sample's
    sum() fails there too.)"""
    host = serve("fan_in_fan_out")
    root = tmp_path / "site"
    for name in ("E2_a", "E2_b", "E2_c"):
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text("x = 1\n")
    start = requests.post(
        f"{host.url}/api/orchestrators/E2_BackupSiteContent", json=str(root), timeout=TIMEOUT
    )
    payload = check_status_payload(start)
    status = finished(payload["statusQueryGetUri"])
    assert status["runtimeStatus"] == "Failed", status
    assert "Activity function 'E2_CopyFileToBlob' failed" in status["output"]  # from_connection_string(None)
    history = requests.get(payload["statusQueryGetUri"] + "&showHistory=true", timeout=TIMEOUT).json()
    copies = [e for e in history["historyEvents"] if e.get("Name") == "E2_CopyFileToBlob"]
    assert len(copies) == 3  # fanned out: one copy per file, scheduled in one episode


def test_simple_sub_orchestration(serve) -> None:
    host = serve("simple_sub_orchestration")
    payload = check_status_payload(
        requests.post(f"{host.url}/api/orchestrators/orchestrator", timeout=TIMEOUT)
    )
    assert finished(payload["statusQueryGetUri"])["output"] == "Hello Seattle"


def continue_and_finish(payload: dict[str, str]) -> dict[str, Any]:
    poll(payload["statusQueryGetUri"], lambda b: b["customStatus"] == "Waiting for Continue event...")
    raised = requests.post(
        payload["sendEventPostUri"].replace("{eventName}", "Continue"), json={}, timeout=TIMEOUT
    )
    assert raised.status_code == 202
    return finished(payload["statusQueryGetUri"])


def test_orchestration_versioning_default_and_explicit(serve) -> None:
    host = serve("orchestration_versioning")
    start = f"{host.url}/api/orchestrators/my_orchestrator"
    status = continue_and_finish(check_status_payload(requests.post(start, timeout=TIMEOUT)))
    assert status["output"] == [
        "Orchestration version: 1.0",
        "Suborchestration version (explicit): 0.9",
        "Suborchestration version (default): 1.0",
        "Hello from A!",
    ]
    explicit = check_status_payload(requests.post(start, params={"version": "2.0"}, timeout=TIMEOUT))
    assert continue_and_finish(explicit)["output"] == [
        "Orchestration version: 2.0",
        "Suborchestration version (explicit): 0.9",
        "Suborchestration version (default): 1.0",
        "Hello from B!",
    ]


def test_orchestration_versioning_across_a_redeploy(tmp_path: Path) -> None:
    """The README's walk-through: start, stop the app, set defaultVersion 2.0 in host.json, start it again,
    raise the event. (The sample is copied so that its host.json can be edited as the README says.)"""
    app = tmp_path / "orchestration_versioning"
    shutil.copytree(sample_dir("orchestration_versioning"), app, ignore=shutil.ignore_patterns("__pycache__"))
    state = tmp_path / "state"
    first = running(app, state)
    try:
        payload = check_status_payload(
            requests.post(f"{first.url}/api/orchestrators/my_orchestrator", timeout=TIMEOUT)
        )
        poll(payload["statusQueryGetUri"], lambda b: b["customStatus"] == "Waiting for Continue event...")
    finally:
        first.stop()
    config = json.loads((app / "host.json").read_text())
    config["extensions"]["durableTask"]["defaultVersion"] = "2.0"
    (app / "host.json").write_text(json.dumps(config))
    second = running(app, state)
    try:
        code = {"code": second.system_key}
        base = f"{second.url}/runtime/webhooks/durabletask/instances/{payload['id']}"
        assert (
            requests.post(f"{base}/raiseEvent/Continue", json={}, params=code, timeout=TIMEOUT).status_code
            == 202
        )
        status = finished(f"{base}?code={second.system_key}")
    finally:
        second.stop()
    assert status["output"] == [
        "Orchestration version: 1.0",
        "Suborchestration version (explicit): 0.9",
        "Suborchestration version (default): 2.0",
        "Hello from A!",
    ]


def test_management_urls_of_a_sample(serve) -> None:
    """suspend, resume and purge through the URLs the sample's create_check_status_response returned."""
    host = serve("orchestration_versioning")
    payload = check_status_payload(
        requests.post(f"{host.url}/api/orchestrators/my_orchestrator", timeout=TIMEOUT)
    )
    poll(payload["statusQueryGetUri"], lambda b: b["customStatus"] == "Waiting for Continue event...")
    assert (
        requests.post(payload["suspendPostUri"].replace("{text}", "pause"), timeout=TIMEOUT).status_code
        == 202
    )
    poll(payload["statusQueryGetUri"], lambda b: b["runtimeStatus"] == "Suspended")
    assert requests.delete(payload["purgeHistoryDeleteUri"], timeout=TIMEOUT).status_code == 412
    assert requests.post(payload["resumePostUri"].replace("{text}", "go"), timeout=TIMEOUT).status_code == 202
    assert continue_and_finish(payload)["runtimeStatus"] == "Completed"
    assert requests.delete(payload["purgeHistoryDeleteUri"], timeout=TIMEOUT).json() == {
        "instancesDeleted": 1
    }
    assert requests.get(payload["statusQueryGetUri"], timeout=TIMEOUT).status_code == 404


def test_serialize_arguments(serve) -> None:
    if SAMPLES is not None and not (SAMPLES / "serialize_arguments" / "shared_code").is_dir():
        pytest.skip("serialize_arguments/shared_code (its SerializableClass) is not in this checkout")
    host = serve("serialize_arguments")
    payload = check_status_payload(
        requests.post(f"{host.url}/api/orchestrators/orchestrator", timeout=TIMEOUT)
    )
    assert finished(payload["statusQueryGetUri"])["output"] == 5
