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
from retrain.vocabulary import TAG_INSTANCE_ID

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
BICEP = (INFRA / "main.bicep").read_text()
# The Event Grid subscriptions: a module, deployed to the system topic's resource group ("" when missing:
# the tests that read it then fail on what it lacks).
_SUBSCRIPTIONS = INFRA / "modules" / "job-event-subscriptions.bicep"
SUBSCRIPTIONS = _SUBSCRIPTIONS.read_text() if _SUBSCRIPTIONS.exists() else ""
ALL_BICEP = {p.relative_to(INFRA).as_posix(): p.read_text() for p in sorted(INFRA.rglob("*.bicep"))}


def _code(text: str = BICEP) -> str:
    """A template without comments and string contents (so braces in text do not count)."""
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"'(?:\\.|[^'\\])*'", "''", text)


def _block(kind: str, symbol: str, text: str = BICEP) -> str:
    """The body of `<kind> <symbol> ...` (resource or module; up to its matching closing brace)."""
    match = re.search(rf"^\s*{kind} {symbol} '[^']+'[^{{]*\{{", text, re.M)
    assert match, f"no {kind} {symbol}"
    depth, i = 1, match.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[match.start() : i]


def _resource(symbol: str, text: str = BICEP) -> str:
    return _block("resource", symbol, text)


def _module(symbol: str) -> str:
    return _block("module", symbol)


def _param_decorators(name: str) -> str:
    """The decorator lines right above `param <name>`."""
    match = re.search(rf"((?:^@[^\n]*\n)*)^param {name} ", BICEP, re.M)
    assert match, f"no param {name}"
    return match.group(1)


def test_brackets_balance():
    for path, text in ALL_BICEP.items():
        code = _code(text)
        for opening, closing in ("{}", "[]", "()"):
            assert code.count(opening) == code.count(closing), f"{path}: unbalanced {opening}{closing}"


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
    assert re.search(r"resource appSettings 'config' = \{\s*(?://[^\n]*\s*)*name: 'appsettings'", settings)
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
    subscriptions = _module("jobEventSubscriptions")
    assert "= if (deployEventSubscription)" in subscriptions
    assert "topicName: eventGridSystemTopicName" in subscriptions
    assert re.search(r"dependsOn: \[\s*newJobEventsTopic\s*\]", subscriptions)  # the creation first
    assert re.search(r"resource topic '[^']+' existing = \{\s*name: topicName", SUBSCRIPTIONS)
    for symbol in ("runCompletedSubscription", "runStatusSubscription"):
        assert "parent: topic" in _resource(symbol, SUBSCRIPTIONS)


def test_an_existing_system_topic_in_another_resource_group_is_found_and_used():
    # Issue 19.5: a topic elsewhere in the subscription was missed by a lookup limited to one resource group
    # (and case-sensitive about the workspace id), and the subscriptions were created in the deployment's
    # resource group, where that topic is not.
    assert re.search(r"^param existingEventGridSystemTopicResourceGroup string = ''$", BICEP, re.M)
    rg = re.search(r"^var eventGridSystemTopicResourceGroup = (.+)$", BICEP, re.M)
    assert rg and "existingEventGridSystemTopicResourceGroup" in rg.group(1)
    assert "resourceGroup().name" in rg.group(1)  # the default: the topic this template creates, here
    assert "scope: resourceGroup(eventGridSystemTopicResourceGroup)" in _module("jobEventSubscriptions")
    docs = (REPO / "docs" / "azure.md").read_text().replace("\\\n", " ")  # one line per command
    lookup = next((line for line in docs.splitlines() if "az eventgrid system-topic list" in line), "")
    assert lookup, "docs/azure.md must show how to find an existing system topic"
    assert " -g " not in lookup and "--resource-group" not in lookup  # the whole subscription
    assert "tolower" in lookup  # ARM ids differ in case between services
    assert "existingEventGridSystemTopicResourceGroup=" in docs


def test_run_status_changed_delivers_only_terminal_statuses():
    status = _resource("runStatusSubscription", SUBSCRIPTIONS)
    assert "'Microsoft.MachineLearningServices.RunStatusChanged'" in status
    assert "'Microsoft.MachineLearningServices.RunCompleted'" not in status
    assert re.search(
        r"operatorType: 'StringIn'\s*key: 'data.runStatus'\s*values: terminalRunStatuses", status
    )
    assert "terminalRunStatuses: terminalRunStatuses" in _module("jobEventSubscriptions")
    values = re.search(r"var terminalRunStatuses = \[(.*?)\]", BICEP, re.S)
    assert values and set(re.findall(r"'(\w+)'", values.group(1))) == set(JOB_TERMINAL_STATUSES)
    # RunCompleted events carry no data.runStatus: a filter on it would drop them all, hence a
    # subscription of their own without that filter.
    completed = _resource("runCompletedSubscription", SUBSCRIPTIONS)
    assert "'Microsoft.MachineLearningServices.RunCompleted'" in completed
    assert "data.runStatus" not in completed


def test_both_subscriptions_deliver_only_jobs_an_orchestration_submitted():
    # Issue 19.7: every job of the workspace woke the app; only jobs tagged with the orchestration's
    # instance id matter (Event Grid's IsNotNull operator on the run tag).
    tag = re.search(r"instanceTag: '([^']+)'", _module("jobEventSubscriptions"))
    assert tag and tag.group(1) == TAG_INSTANCE_ID
    assert re.search(
        r"var submittedByAnOrchestration = \{\s*operatorType: 'IsNotNull'\s*key: 'data.runTags.\$\{instanceTag\}'",
        SUBSCRIPTIONS,
    )
    for symbol in ("runCompletedSubscription", "runStatusSubscription"):
        filters = re.search(r"advancedFilters: \[(.*)\]", _resource(symbol, SUBSCRIPTIONS), re.S)
        assert filters and "submittedByAnOrchestration" in filters.group(1), symbol


def test_event_grid_resources_use_a_ga_api_version():
    # Issue 19.7: preview API versions of Event Grid can change or be retired; 2025-02-15 is GA.
    for path, text in ALL_BICEP.items():
        versions = re.findall(r"^\s*resource \w+ '([^']+)'", text, re.M)
        assert versions, path
        for version in versions:
            assert "-preview" not in version, f"{path}: {version}"
    event_grid = re.findall(r"'Microsoft\.EventGrid/[^@']+@([^']+)'", BICEP + SUBSCRIPTIONS)
    assert event_grid and set(event_grid) == {"2025-02-15"}


def test_every_parameter_is_used_and_every_used_parameter_declared():
    for path, text in ALL_BICEP.items():
        declared = set(re.findall(r"^param (\w+) ", text, re.M))
        body = re.sub(r"^(?:@description\(.*\)|param .*)$", "", text, flags=re.M)
        unused = {p for p in declared if not re.search(rf"\b{p}\b", body)}
        assert not unused, f"{path}: declared but never used: {sorted(unused)}"
    declared = set(re.findall(r"^param (\w+) ", BICEP, re.M))
    params = json.loads((REPO / "infra" / "main.parameters.json").read_text())["parameters"]
    assert set(params) <= declared


READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"  # built-in Storage Blob Data Reader
CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"  # built-in Storage Blob Data Contributor


def _storage_role_module() -> tuple[str, str]:
    match = re.search(r"module workspaceStorageRole '([^']+)' = \{", BICEP)
    assert match, "no role on the workspace's storage account"
    return _module("workspaceStorageRole"), (INFRA / match.group(1)).read_text()


def test_the_identity_may_read_the_workspace_artifacts_the_gate_needs():
    # The Azure adapter reads test_errors.json from the workspace's artifact store with the app's identity:
    # without Storage Blob Data Reader there, every cycle would fail at the gate with a 403.
    body, module = _storage_role_module()
    assert "workspace.properties.storageAccount" in body and "identity.properties.principalId" in body
    assert READER in module
    assert re.search(r"scope: account\b", module) and "existing" in module
    # a module's parameters may be runtime values; a resource's name or scope may not (BCP120)
    assert not re.search(r"resource \w+ '[^']+' existing = \{\s*name: [^\n]*properties", BICEP)


def _split_id(resource_id: str, resource_group_id: str) -> list[str]:
    """What `var workspaceStorageIdParts` computes, in Python (checked against its text below)."""
    return (resource_group_id if resource_id == "" else resource_id).split("/")


def test_the_workspace_storage_may_live_in_another_resource_group():
    # Issue 19.4: bring-your-own storage and AI Foundry hubs put the account elsewhere; the module resolved
    # it in the deployment's resource group and failed. Its scope must be known when the deployment
    # starts, so the id is a parameter, split into subscription and resource group.
    assert re.search(r"^param workspaceStorageAccountId string = ''$", BICEP, re.M)
    parts = re.search(r"^var workspaceStorageIdParts = (.+)$", BICEP, re.M)
    assert parts and parts.group(1) == (
        "split(empty(workspaceStorageAccountId) ? resourceGroup().id : workspaceStorageAccountId, '/')"
    )
    body, _ = _storage_role_module()
    assert "scope: resourceGroup(workspaceStorageIdParts[2], workspaceStorageIdParts[4])" in body
    assert re.search(
        r"storageAccountName: empty\(workspaceStorageAccountId\) \? "
        r"last\(split\(workspace\.properties\.storageAccount, '/'\)\) : last\(workspaceStorageIdParts\)",
        body,
    )
    here = "/subscriptions/sub-a/resourceGroups/rg-app"
    elsewhere = "/subscriptions/sub-b/resourceGroups/rg-hub/providers/Microsoft.Storage/storageAccounts/sthub"
    for given, (sub, rg) in {"": ("sub-a", "rg-app"), elsewhere: ("sub-b", "rg-hub")}.items():
        split = _split_id(given, here)
        assert (split[2], split[4]) == (sub, rg)
    assert _split_id(elsewhere, here)[-1] == "sthub"
    docs = (REPO / "docs" / "azure.md").read_text()
    assert "--query storage_account" in docs and "workspaceStorageAccountId=" in docs


def test_identity_based_datastores_can_get_blob_data_contributor():
    # Issue 19.6: with identity-based datastores the SDK uploads data and code with the app's identity,
    # which Reader refuses. A switch, off by default (least privilege).
    assert re.search(r"^param workspaceStorageWriter bool = false$", BICEP, re.M)
    body, module = _storage_role_module()
    assert "allowWrite: workspaceStorageWriter" in body
    assert re.search(r"^param allowWrite bool = false$", module, re.M)
    assert CONTRIBUTOR in module and READER in module
    assert re.search(r"var role = allowWrite \? storageBlobDataContributor : storageBlobDataReader", module)
    assert re.search(r"roleDefinitionId: subscriptionResourceId\([^)]*, role\)", module)
    docs = (REPO / "docs" / "azure.md").read_text()
    assert "workspaceStorageWriter=true" in docs
    assert re.search(r'az role assignment create [^\n]*--role "Storage Blob Data Contributor"', docs)


def test_parameter_ranges():
    # Issue 19.7: Flex Consumption allows 40 to 1000 instances; ARM only says so after the plan is made.
    decorators = _param_decorators("maximumInstanceCount")
    assert "@minValue(40)" in decorators and "@maxValue(1000)" in decorators
    decorators = _param_decorators("baseName")
    assert "@minLength(3)" in decorators and "@maxLength(11)" in decorators
    assert "letters, digits or hyphens" in decorators  # the documented charset


def _evaluate(expression: str, names: dict[str, str]) -> str:
    """A Bicep string expression of interpolations, string literals, variables and toLower/replace/take."""
    expression = expression.strip()
    call = re.fullmatch(r"(\w+)\((.*)\)", expression)
    if call:
        func, args = call.group(1), _split_args(call.group(2))
        values = [_evaluate(a, names) for a in args]
        if func == "toLower":
            return values[0].lower()
        if func == "replace":
            return values[0].replace(values[1], values[2])
        if func == "take":
            return values[0][: int(values[1])]
        raise AssertionError(f"unknown function {func}")
    if expression.startswith("'"):
        out, i, text = "", 0, expression[1:-1]
        while i < len(text):
            if text.startswith("${", i):
                depth, j = 1, i + 2
                while depth:
                    depth += {"{": 1, "}": -1}.get(text[j], 0)
                    j += 1
                out, i = out + _evaluate(text[i + 2 : j - 1], names), j
            else:
                out, i = out + text[i], i + 1
        return out
    if expression.isdigit():
        return expression
    return names[expression]


def _split_args(args: str) -> list[str]:
    out, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(args):
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch in "({":
            depth += 1
        elif not quoted and ch in ")}":
            depth -= 1
        elif not quoted and depth == 0 and ch == ",":
            out.append(args[start:i])
            start = i + 1
    return [*out, args[start:]]


def test_every_allowed_base_name_makes_a_valid_storage_account_name():
    # Issue 19.7: a hyphen (or an upper-case letter) in baseName made an invalid storage account name that
    # ARM refused mid-deployment. Storage account names: 3 to 24 lower-case letters and digits.
    expression = re.search(r"^var storageName = (.+)$", BICEP, re.M)
    assert expression
    suffix = "abcdefghij0123"[:13]  # uniqueString: 13 lower-case letters and digits
    for base in ("ret", "retrain", "my-app", "a-b-c-d-e-f", "Retrain-Dev", "abcdefghijk", "x--"):
        name = _evaluate(expression.group(1), {"baseName": base, "suffix": suffix})
        assert re.fullmatch(r"[a-z0-9]{3,24}", name), (base, name)
    # an upgrade keeps its account: the name of a baseName that deployed before is unchanged
    assert _evaluate(expression.group(1), {"baseName": "retrain", "suffix": suffix}) == "stretrainabcdefghij"


def test_the_function_app_starts_after_its_storage_roles():
    # Issue 19.7: identity-based AzureWebJobsStorage fails to start without its roles.
    depends = re.search(r"\n  dependsOn: \[(.*?)\]", _resource("functionApp"), re.S)
    assert depends and "storageRoles" in depends.group(1).split()


def test_module_deployment_names_are_unique_per_base_name():
    # Issue 19.7: two deployments of this template (two baseNames) in one resource group, or modules in a
    # shared resource group, must not overwrite each other's nested deployments.
    modules = re.findall(r"^module (\w+) ", BICEP, re.M)
    assert set(modules) == {"workspaceStorageRole", "jobEventSubscriptions"}
    for symbol in modules:
        name = re.search(r"^  name: '([^']+)'$", _module(symbol), re.M)
        assert name and "${baseName}" in name.group(1) and "${take(suffix, 8)}" in name.group(1), symbol
        # at most 64 characters with the longest baseName (11)
        assert (
            len(name.group(1).replace("${baseName}", "x" * 11).replace("${take(suffix, 8)}", "y" * 8)) <= 64
        )


def test_checkov_findings_are_fixed_or_skipped_with_a_reason():
    # Issue 19.8: `make checkov` (CI) fails on any failed check. The fixes that fit Flex Consumption:
    site_config = re.search(r"siteConfig: \{(.*?)\}", _resource("functionApp"), re.S)
    assert site_config
    assert "ftpsState: 'Disabled'" in site_config.group(1)
    assert "http20Enabled: true" in site_config.group(1)
    assert "minTlsVersion: '1.2'" in site_config.group(1)
    storage = _resource("storage")
    assert "minimumTlsVersion: 'TLS1_2'" in storage and "allowSharedKeyAccess: false" in storage
    # The rest is skipped in the template, one check per comment (checkov reads one id per match) and
    # each with its reason. A `#checkov:skip` line would not compile: Bicep comments are `//`.
    for path, text in ALL_BICEP.items():
        assert "#checkov" not in text, path
        for line in re.findall(r"^\s*// (checkov:skip=[^\n]*)", text, re.M):
            assert re.fullmatch(r"checkov:skip=CKV_AZURE_\d+:\S.{20,}", line), f"{path}: {line}"
    skipped = re.findall(r"checkov:skip=(CKV_AZURE_\d+):", BICEP)
    assert len(skipped) == 15


def test_ci_runs_checkov_in_its_own_virtualenv():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^CHECKOV_VENV := \.venv-checkov$", makefile, re.M)
    assert re.search(r"^CHECKOV_VERSION := 3\.3\.30$", makefile, re.M)
    assert '$(CHECKOV_VENV)/bin/python -m pip install --quiet "checkov==$(CHECKOV_VERSION)"' in makefile
    recipe = makefile[makefile.index("\ncheckov:") :].split("\n\n")[0]
    assert "-d infra --framework bicep --compact --quiet" in recipe
    assert "Parsing errors" in recipe  # checkov exits 0 on a template it could not parse
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert ci.index("make test") < ci.index("make checkov")
    assert ".venv-checkov/" in (REPO / ".gitignore").read_text().splitlines()
    assert ".venv-checkov/" in (REPO / ".funcignore").read_text().splitlines()


def test_model_monitoring_breaches_have_a_subscription_of_their_own():
    # Issue 19.2: a breached signal's run carries no orchestration tag, so the two job subscriptions drop
    # it; a third delivers RunStatusChanged of runs tagged with the breach (the tag events.py reads).
    from retrain.events import MODEL_MONITOR_BREACH_TAG

    breach = _resource("monitorBreachSubscription", SUBSCRIPTIONS)
    assert "'Microsoft.MachineLearningServices.RunStatusChanged'" in breach
    assert "'${functionAppId}/functions/job_events'" in SUBSCRIPTIONS and "destination: destination" in breach
    filters = re.search(r"advancedFilters: \[(.*)\]", breach, re.S)
    assert filters and f"key: 'data.runTags.{MODEL_MONITOR_BREACH_TAG}'" in filters.group(1)
    assert "submittedByAnOrchestration" not in filters.group(1)
    assert "'has failed due to'" in filters.group(
        1
    )  # Azure ML's message: "The signal '<name>' has failed due to"
