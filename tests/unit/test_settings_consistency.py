"""Every setting the code reads is declared in `retrain.settings.SETTINGS`, described in
`local.settings.sample.json` and set in the Bicep app settings, and nothing else is (except the
documented exceptions below)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from retrain.settings import SETTINGS

REPO = Path(__file__).resolve().parents[2]
DECLARED = {s.name for s in SETTINGS}
SECRETS = {s.name for s in SETTINGS if s.secret}

# Set by the Functions host or the platform, never by the app's own code.
HOST_SETTINGS = {"AzureWebJobsStorage", "FUNCTIONS_WORKER_RUNTIME"}
# Identity-based storage and telemetry of the host in Azure (Bicep only; local uses AzureWebJobsStorage).
BICEP_HOST_SETTINGS = {
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}
# Variables the code reads that the host/runtime sets (not app settings). Add here with the reason.
RUNTIME_VARIABLES = {
    "RETRAIN_LOCAL_HOST_URL",  # set by the local host for its child processes
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_RUN_ID",  # set by Azure ML / the local job runner
    "AZUREML_MODEL_DIR",
    "AZUREML_ENTRY_SCRIPT",  # azmlinfsrv variables (set by the deployment / local server)
    "PATH",
    "HOME",
    "XDG_CACHE_HOME",  # where the local platform caches its empty MLflow store (retrain/local/mlflow_store.py)
    "PYTHONPATH",
    "TMPDIR",
}

_READS = [
    re.compile(r"""settings\.get(?:_int|_float|_bool|_list)?\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""),
    re.compile(r"""\bget(?:_int|_float|_bool|_list)\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""),
    re.compile(r"""os\.environ\[\s*["']([A-Za-z_][A-Za-z0-9_]*)["']\s*\]"""),
    re.compile(r"""os\.environ\.get\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""),
    re.compile(r"""os\.getenv\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""),
    re.compile(r"""["']%([A-Za-z_][A-Za-z0-9_]*)%["']"""),  # binding expressions in decorators
    # The app's own names, also when read through a constant (FUNCTION_KEY_SETTING = "RETRAIN_FUNCTION_KEY").
    re.compile(r"""["']((?:RETRAIN|AZURE|AZUREML)_[A-Z0-9_]+)["']"""),
]

# settings.py's readers of one setting each (the file itself is not scanned): a call reads that setting.
TYPED_READERS = {"tickers": "RETRAIN_TICKERS"}


def _code_reads() -> set[str]:
    files = [
        REPO / "function_app.py",
        *(p for p in (REPO / "retrain").rglob("*.py") if p.name != "settings.py"),
        *(REPO / "functions_host").rglob("*.py"),  # the local host reads the key settings
    ]
    names: set[str] = set()
    for path in files:
        if path.is_file():
            text = path.read_text()
            for rx in _READS:
                names.update(rx.findall(text))
            names.update(n for f, n in TYPED_READERS.items() if re.search(rf"\bsettings\.{f}\(", text))
    return names


def _sample() -> dict:
    return json.loads((REPO / "local.settings.sample.json").read_text())


def _bicep_app_settings() -> set[str]:
    text = (REPO / "infra" / "main.bicep").read_text()
    names: set[str] = set()
    for block in ("retrainSettings", "hostSettings"):
        match = re.search(rf"var {block} = \{{(.*?)\n\}}", text, re.S)
        assert match, f"infra/main.bicep has no `var {block} = {{...}}` block"
        names.update(re.findall(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:", match.group(1), re.M))
    assert "properties: union(retrainSettings, hostSettings)" in text, (
        "the app settings must come from both blocks"
    )
    return names


def test_every_setting_the_code_reads_is_declared() -> None:
    undeclared = _code_reads() - DECLARED - HOST_SETTINGS - RUNTIME_VARIABLES
    assert not undeclared, (
        f"read by the code but not declared in retrain.settings.SETTINGS: {sorted(undeclared)}"
    )


def test_every_declared_setting_is_read_by_the_code() -> None:
    unused = DECLARED - _code_reads()
    assert not unused, f"declared but never read (remove them or read them): {sorted(unused)}"


def test_sample_has_exactly_the_declared_settings_with_descriptions() -> None:
    sample = _sample()
    assert sample["IsEncrypted"] is False
    values = sample["Values"]
    assert set(values) == DECLARED | HOST_SETTINGS
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert set(sample["Descriptions"]) == set(values)
    assert all(len(d) > 10 and "\n" not in d for d in sample["Descriptions"].values())
    for name in SECRETS:
        assert values[name] == "", f"{name} is a secret: the sample must leave it empty"
    assert all(isinstance(v, str) for v in values.values()), "local.settings.json values are strings"


def test_sample_defaults_match_the_declared_defaults() -> None:
    values = _sample()["Values"]
    for setting in SETTINGS:
        if setting.default is not None and setting.name != "RETRAIN_PLATFORM":
            assert values[setting.name] == setting.default, setting.name


def test_bicep_sets_every_declared_setting_except_the_local_secrets() -> None:
    app_settings = _bicep_app_settings()
    assert app_settings - BICEP_HOST_SETTINGS == DECLARED - SECRETS
    assert not SECRETS & app_settings, "host keys are managed by Azure, never app settings"
    # Flex Consumption rejects these as app settings (the runtime is in functionAppConfig).
    assert not {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"} & app_settings


def test_host_json_matches_the_plan() -> None:
    host = json.loads((REPO / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"] == {
        "id": "Microsoft.Azure.Functions.ExtensionBundle",
        "version": "[4.*, 5.0.0)",
    }
    hours, minutes, _ = (int(p) for p in host["functionTimeout"].split(":"))
    assert 0 < hours * 60 + minutes <= 30  # activities are short; Flex Consumption allows 30 min by default
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,44}", host["extensions"]["durableTask"]["hubName"])
    assert host["logging"]["applicationInsights"]["samplingSettings"]["isEnabled"] is True


def test_event_grid_subscription_targets_job_events_with_both_event_types() -> None:
    text = (REPO / "infra" / "main.bicep").read_text()
    # the subscriptions are a module, deployed where the system topic is
    text += (REPO / "infra" / "modules" / "job-event-subscriptions.bicep").read_text()
    assert "functionAppId: functionApp.id" in text
    assert "'${functionAppId}/functions/job_events'" in text
    assert "topicType: 'Microsoft.MachineLearningServices.Workspaces'" in text
    assert "'Microsoft.MachineLearningServices.RunCompleted'" in text
    assert "'Microsoft.MachineLearningServices.RunStatusChanged'" in text
    assert "f6c7c914-8db3-469d-8ca1-694a8f32e121" in text  # AzureML Data Scientist


def test_parameters_file_names_only_bicep_parameters() -> None:
    params = json.loads((REPO / "infra" / "main.parameters.json").read_text())["parameters"]
    declared = set(re.findall(r"^param (\w+) ", (REPO / "infra" / "main.bicep").read_text(), re.M))
    assert set(params) <= declared
    assert "workspaceName" in params
