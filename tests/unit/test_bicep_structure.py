"""Structural checks of infra/main.bicep for the errors and omissions we know of.

The Bicep compiler (a .NET binary) cannot be installed here, so the template is NOT compiled by these
tests: they parse its text for the known defects instead. `az bicep build -f infra/main.bicep` remains
the real check (see docs/azure.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from retrain.ports import JOB_TERMINAL_STATUSES

REPO = Path(__file__).resolve().parents[2]
BICEP = (REPO / "infra" / "main.bicep").read_text()


def _code() -> str:
    """The template without comments and string contents (so braces in text do not count)."""
    text = re.sub(r"//[^\n]*", "", BICEP)
    return re.sub(r"'(?:\\.|[^'\\])*'", "''", text)


def _resource(symbol: str) -> str:
    """The body of `resource <symbol> ...` (up to its matching closing brace)."""
    match = re.search(rf"^\s*resource {symbol} '[^']+'[^{{]*\{{", BICEP, re.M)
    assert match, f"infra/main.bicep has no resource {symbol}"
    depth, i = 1, match.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(BICEP[i], 0)
        i += 1
    return BICEP[match.start() : i]


def test_brackets_balance():
    code = _code()
    for opening, closing in ("{}", "[]", "()"):
        assert code.count(opening) == code.count(closing), f"unbalanced {opening}{closing}"


def test_locations_are_known_when_the_deployment_starts():
    # BCP120: `location` must be computable at the start; an existing resource's .location is not.
    for value in re.findall(r"^\s*location: (.+)$", _code(), re.M):
        assert value.strip() in {"location", "workspaceLocation"}, value


def test_no_for_loop_over_runtime_values():
    # BCP178: a for-expression must be computable at the start of the deployment. The only loop left is
    # over built-in role ids (compile-time constants).
    loops = re.findall(r"\[\s*for\s+\w+\s+in\s+(.+?):", _code())
    assert loops, "expected the role-assignment loop"
    for iterable in loops:
        assert "items(" not in iterable and ".properties" not in iterable, iterable
        assert re.fullmatch(r"\[\s*(roles\.\w+\s*,?\s*)+\]", iterable.strip()), iterable


def test_app_settings_use_the_flex_consumption_samples_pattern():
    app = _resource("functionApp")
    settings = _resource("appSettings")
    assert settings in app, "the appsettings config must be a child resource of the Function App"
    assert re.search(r"resource appSettings 'config' = \{\s*name: 'appsettings'", settings)
    assert "properties: union(retrainSettings, hostSettings)" in settings
    site_config = re.search(r"siteConfig: \{(.*?)\}", app, re.S)
    assert site_config and "appSettings" not in site_config.group(1)


def test_flex_consumption_durable_recommendations():
    app = _resource("functionApp")
    assert re.search(r"alwaysReady: durableAlwaysReadyInstances > 0 \? \[\s*\{\s*name: 'durable'", app)
    assert "instanceCount: durableAlwaysReadyInstances" in app
    assert re.search(r"^param durableAlwaysReadyInstances int = 1$", BICEP, re.M)
    # The Durable task hub's queue polling (host.json, Azure Storage provider): at most 10 s between
    # polls when idle instead of the default 30 s, so a raised event or timer is noticed sooner.
    host = json.loads((REPO / "host.json").read_text())
    interval = host["extensions"]["durableTask"]["storageProvider"]["maxQueuePollingInterval"]
    hours, minutes, seconds = (int(p) for p in interval.split(":"))
    assert 0 < hours * 3600 + minutes * 60 + seconds <= 10


def test_an_existing_system_topic_can_be_reused():
    assert re.search(r"^param existingEventGridSystemTopicName string = ''$", BICEP, re.M)
    created = _resource("newJobEventsTopic")
    assert "= if (createEventGridSystemTopic)" in created
    assert "var createEventGridSystemTopic = empty(existingEventGridSystemTopicName)" in BICEP
    assert re.search(r"resource jobEventsTopic '[^']+' existing = \{\s*name: eventGridSystemTopicName", BICEP)
    for symbol in ("runCompletedSubscription", "runStatusSubscription"):
        sub = _resource(symbol)
        assert "parent: jobEventsTopic" in sub and "newJobEventsTopic" in sub  # dependsOn the creation


def test_run_status_changed_delivers_only_terminal_statuses():
    status = _resource("runStatusSubscription")
    assert "'Microsoft.MachineLearningServices.RunStatusChanged'" in status
    assert "'Microsoft.MachineLearningServices.RunCompleted'" not in status
    assert re.search(
        r"operatorType: 'StringIn'\s*key: 'data.runStatus'\s*values: terminalRunStatuses", status
    )
    values = re.search(r"var terminalRunStatuses = \[(.*?)\]", BICEP, re.S)
    assert values and set(re.findall(r"'(\w+)'", values.group(1))) == set(JOB_TERMINAL_STATUSES)
    # RunCompleted events carry no data.runStatus: a filter on it would drop them all, hence a
    # subscription of their own without advanced filters.
    completed = _resource("runCompletedSubscription")
    assert "'Microsoft.MachineLearningServices.RunCompleted'" in completed
    assert "advancedFilters" not in completed


def test_every_parameter_is_used_and_every_used_parameter_declared():
    declared = set(re.findall(r"^param (\w+) ", BICEP, re.M))
    body = re.sub(r"^(?:@description\(.*\)|param .*)$", "", BICEP, flags=re.M)
    unused = {p for p in declared if not re.search(rf"\b{p}\b", body)}
    assert not unused, f"declared but never used: {sorted(unused)}"
    params = json.loads((REPO / "infra" / "main.parameters.json").read_text())["parameters"]
    assert set(params) <= declared


def test_the_identity_may_read_the_workspace_artifacts_the_gate_needs():
    # The Azure adapter reads test_errors.json from the workspace's artifact store with the app's identity:
    # without Storage Blob Data Reader there, every cycle would fail at the gate with a 403.
    match = re.search(r"module workspaceArtifactsReader '([^']+)' = \{(.*?)\n\}", BICEP, re.S)
    assert match, "no role for reading the workspace's artifact store"
    path, body = match.groups()
    assert "workspace.properties.storageAccount" in body and "identity.properties.principalId" in body
    module = (REPO / "infra" / path).read_text()
    assert "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1" in module  # the built-in Storage Blob Data Reader role
    assert re.search(r"scope: account\b", module) and "existing" in module
    # a module's parameters may be runtime values; a resource's name or scope may not (BCP120)
    assert not re.search(r"resource \w+ '[^']+' existing = \{\s*name: [^\n]*properties", BICEP)
