"""The azureml adapter against Azure's endpoint semantics, through the real azure-ai-ml SDK and the
recording transport (tests/unit/azure_recording_transport.py) in its Azure-like mode: long-running
traffic updates, deployments and deletes; 409 Conflict while an operation runs; a Failed deployment
that refuses an update; scoring with per-endpoint URIs and keys."""

from __future__ import annotations

import pytest

from retrain.azureml.platform import AzureMLPlatform
from retrain.ports import (
    EndpointBusyError,
    ModelRef,
    PlatformError,
    ScoringUnavailableError,
    TransientPlatformError,
)
from tests.unit.azure_recording_transport import (
    SCORING_DOMAIN,
    WS_PATH,
    ArmTransport,
    endpoint_key,
)

EP = "msft-forecast-1a2b3c"
OPERATION_GETS = 3


# `arm` (the recording ARM transport) and `platform` (the adapter over it) are tests/unit/conftest.py's.


def _deployed(platform: AzureMLPlatform, arm: ArmTransport, *slots: str, name: str = EP) -> None:
    """An endpoint with the given slots deployed (operations done at once), then Azure-like timing."""
    arm.operation_gets = 0
    platform.begin_create_endpoint(name)
    for number, slot in enumerate(slots, start=1):
        platform.begin_deployment(name, slot, ModelRef("msft-forecaster", str(number)))
    arm.operation_gets = OPERATION_GETS


def _puts(arm: ArmTransport, pattern: str) -> int:
    return len(arm.find("PUT", pattern))


def _state(arm: ArmTransport, path: str) -> str:
    return arm.store[path]["properties"]["provisioningState"]


def test_traffic_update_is_long_running_and_reported_until_it_applies(platform, arm):
    _deployed(platform, arm, "blue", "green")
    started = platform.set_traffic(EP, {"blue": 90, "green": 10})
    assert (started.state, started.traffic) == ("Updating", {"blue": 90, "green": 10})
    [put] = arm.find("PUT", rf"/onlineEndpoints/{EP}$")[-1:]
    assert put.body["properties"]["traffic"] == {"blue": 90, "green": 10}

    # The orchestrator polls get_endpoint: Updating for a few GETs, then Succeeded with the traffic.
    seen = [platform.get_endpoint(EP) for _ in range(OPERATION_GETS + 1)]
    assert [s.state for s in seen] == ["Updating"] * OPERATION_GETS + ["Succeeded"]
    assert all(s.traffic == {"blue": 90, "green": 10} for s in seen)
    assert seen[-1].deployments.keys() == {"blue", "green"}

    # All to green: Azure drops the 0 % entry (the SDK strips it before the PUT); get_endpoint still
    # reports every deployed slot, so the traffic compares equal to what was asked.
    asked = {"green": 100, "blue": 0}
    assert platform.set_traffic(EP, asked).traffic == asked
    assert arm.find("PUT", rf"/onlineEndpoints/{EP}$")[-1].body["properties"]["traffic"] == {"green": 100}
    done = [platform.get_endpoint(EP) for _ in range(OPERATION_GETS + 1)][-1]
    assert (done.state, done.traffic) == ("Succeeded", asked)


def test_set_traffic_again_while_it_applies_is_idempotent_and_another_is_refused(platform, arm):
    _deployed(platform, arm, "blue", "green")
    platform.set_traffic(EP, {"green": 100})
    before = _puts(arm, rf"/onlineEndpoints/{EP}$")

    # The activity ran again: the same traffic is already being applied, nothing is sent.
    again = platform.set_traffic(EP, {"green": 100, "blue": 0})
    assert (again.state, again.traffic) == ("Updating", {"green": 100, "blue": 0})
    # Another traffic while the update runs: refused before any PUT (Azure would answer 409).
    with pytest.raises(EndpointBusyError, match="Updating"):
        platform.set_traffic(EP, {"blue": 100})
    assert _puts(arm, rf"/onlineEndpoints/{EP}$") == before


def test_conflict_from_arm_is_endpoint_busy_and_not_retried(platform, arm):
    _deployed(platform, arm, "blue")
    platform.begin_deployment(EP, "green", ModelRef("msft-forecaster", "2"))  # Creating for a while
    assert platform.get_endpoint(EP).state == "Succeeded"  # the endpoint itself looks idle...
    before = _puts(arm, rf"/onlineEndpoints/{EP}$")

    # ...but ARM refuses any other operation on it while the deployment runs: 409 (with Retry-After,
    # which azure-core's default policy would retry quickly). One PUT, then EndpointBusyError.
    with pytest.raises(EndpointBusyError, match=r"HTTP 409.*busy"):
        platform.set_traffic(EP, {"blue": 100})
    assert _puts(arm, rf"/onlineEndpoints/{EP}$") == before + 1
    with pytest.raises(EndpointBusyError):
        platform.begin_delete_deployment(EP, "blue")
    assert len(arm.find("DELETE", r"/deployments/blue$")) == 1

    # Once the deployment has finished, the same call goes through.
    while platform.get_deployment(EP, "green").state != "Succeeded":
        pass
    assert platform.set_traffic(EP, {"blue": 100}).state == "Updating"


def test_deploying_over_a_slot_that_is_still_provisioning_is_busy(platform, arm):
    _deployed(platform, arm)
    assert platform.begin_deployment(EP, "blue", ModelRef("msft-forecaster", "1")).state == "Creating"
    with pytest.raises(EndpointBusyError, match="Creating"):
        platform.begin_deployment(EP, "blue", ModelRef("msft-forecaster", "2"))
    assert _puts(arm, r"/deployments/blue$") == 1


def test_failed_deployment_must_be_deleted_before_it_is_deployed_again(platform, arm):
    _deployed(platform, arm, "blue")
    path = f"{WS_PATH}/onlineEndpoints/{EP}/deployments/blue"
    arm.store[path]["properties"]["provisioningState"] = "Failed"
    assert platform.get_deployment(EP, "blue").state == "Failed"

    with pytest.raises(PlatformError, match="Failed and cannot be updated; delete it first") as info:
        platform.begin_deployment(EP, "blue", ModelRef("msft-forecaster", "2"))
    assert not isinstance(info.value, EndpointBusyError)  # waiting would not help
    assert _puts(arm, r"/deployments/blue$") == 1  # only the original create

    # Delete: Deleting for a few GETs, then gone (404 -> NotFound); then the slot can be deployed.
    assert platform.begin_delete_deployment(EP, "blue").state == "Deleting"
    states = [platform.get_deployment(EP, "blue").state for _ in range(OPERATION_GETS + 1)]
    assert states == ["Deleting"] * OPERATION_GETS + ["NotFound"]
    assert platform.begin_deployment(EP, "blue", ModelRef("msft-forecaster", "2")).state == "Creating"
    assert _state(arm, path) == "Creating"


def test_delete_that_is_already_running_is_not_sent_twice(platform, arm):
    _deployed(platform, arm, "blue")
    platform.begin_delete_deployment(EP, "blue")
    assert platform.begin_delete_deployment(EP, "blue").state == "Deleting"
    assert len(arm.find("DELETE", r"/deployments/blue$")) == 1


def test_invoke_fetches_uri_and_key_once_and_interleaved_endpoints_never_mix(platform, arm):
    other = "aapl-forecast-1a2b3c"
    _deployed(platform, arm, "blue", "green")
    _deployed(platform, arm, "blue", "green", name=other)
    arm.operation_gets = 0
    platform.set_traffic(EP, {"blue": 100})
    platform.set_traffic(other, {"green": 100})
    closes = {"close": [100.0] * 20}

    plan = [(EP, "blue"), (other, None), (EP, None), (other, "green"), (EP, "green"), (other, None)]
    first = len(arm.calls)
    marks = []
    for endpoint, slot in plan:
        assert platform.invoke(endpoint, closes, slot=slot)["forecast"] == [101.5]
        marks.append(len(arm.calls))
    scoring = [c for c in arm.calls[first:] if c.host.endswith(SCORING_DOMAIN)]
    assert len(scoring) == len(plan)
    for call, (endpoint, slot) in zip(scoring, plan, strict=True):
        assert call.host == f"{endpoint}.{SCORING_DOMAIN}" and call.path == "/score"
        assert call.headers["Authorization"] == f"Bearer {endpoint_key(endpoint)}"
        assert call.headers.get("azureml-model-deployment") == slot
        assert call.body == closes
    # The scoring URI and key were fetched once per endpoint (at its first call); after that each
    # invoke is one scoring call and nothing else.
    keys = [c.path.split("/")[-2] for c in arm.calls[first:] if c.path.endswith("/listKeys")]
    assert sorted(keys) == sorted([EP, other])
    assert all(c.host.endswith(SCORING_DOMAIN) for c in arm.calls[marks[1] :])


def test_invoke_refetches_a_regenerated_key_once(platform, arm):
    _deployed(platform, arm, "blue")
    platform.invoke(EP, {"close": [1.0] * 20}, slot="blue")
    arm.keys[EP] = "pk-regenerated"
    assert platform.invoke(EP, {"close": [1.0] * 20}, slot="blue")["forecast"] == [101.5]
    statuses = [c.headers["Authorization"] for c in arm.calls if c.host.endswith(SCORING_DOMAIN)]
    assert statuses == [f"Bearer {endpoint_key(EP)}"] * 2 + ["Bearer pk-regenerated"]


def test_unpinned_scoring_without_traffic_is_a_clear_error(platform, arm):
    _deployed(platform, arm, "blue")
    with pytest.raises(PlatformError, match="404.*no deployment takes traffic yet"):
        platform.invoke(EP, {"close": [1.0] * 20})
    assert platform.invoke(EP, {"close": [1.0] * 20}, slot="blue")["forecast"] == [101.5]


def test_a_scoring_503_with_retry_after_says_how_long_to_wait(platform, arm):
    """The monitor waits for a scoring URL that answers 503 (or 429) with Retry-After: the adapter reads
    the header; a 503 without it stays a plain transient failure."""
    _deployed(platform, arm, "blue")
    platform.invoke(EP, {"close": [1.0] * 20}, slot="blue")  # the scoring URI and key are cached now
    arm.fail_next = [(503, {"Retry-After": "7"})]
    with pytest.raises(ScoringUnavailableError, match="503") as refused:
        platform.invoke(EP, {"close": [1.0] * 20}, slot="blue")
    assert refused.value.retry_after_s == 7.0
    arm.fail_next = [(503, {})]
    with pytest.raises(TransientPlatformError, match="503") as failed:
        platform.invoke(EP, {"close": [1.0] * 20}, slot="blue")
    assert not isinstance(failed.value, ScoringUnavailableError)
    assert platform.invoke(EP, {"close": [1.0] * 20}, slot="blue")["forecast"] == [101.5]


def test_operator_traffic_goes_through_the_adapter_and_waits_until_azure_applies_it(platform, arm):
    """`retrain traffic` / POST /api/endpoints/{ticker}/traffic in Azure: the same port call, a PUT of
    the endpoint's traffic, then GETs until it is Succeeded with that traffic; recorded as `operator`."""
    from retrain.traffic_control import TrafficError, apply_traffic

    class Ledger:
        events: list = []

        def append(self, event):
            self.events.append(event)

    _deployed(platform, arm, "blue", "green")
    platform.set_traffic(EP, {"blue": 100})
    for _ in range(OPERATION_GETS + 1):
        platform.get_endpoint(EP)
    from retrain import adapters

    ledger = Ledger()
    with adapters.use(ledger=ledger):  # the Azure Table ledger has its own recording-transport tests
        sleeps: list[float] = []
        state = apply_traffic(platform, EP, {"blue": 0, "green": 100}, sleep=sleeps.append)
    assert (state.state, state.traffic) == ("Succeeded", {"blue": 0, "green": 100})
    assert arm.find("PUT", rf"/onlineEndpoints/{EP}$")[-1].body["properties"]["traffic"] == {"green": 100}
    assert sleeps  # waited for Azure's long-running update (Updating first), not just asked
    assert [e.reason for e in ledger.events] == ["operator"]
    # A busy endpoint (an operation of its own runs) is a 409 with the reason, not a traceback.
    platform.set_traffic(EP, {"blue": 100})
    with pytest.raises(TrafficError) as busy:
        apply_traffic(platform, EP, {"blue": 0, "green": 100}, sleep=sleeps.append)
    assert busy.value.status == 409


def test_traffic_to_no_slot_is_sent_as_an_empty_table_and_unpinned_requests_then_answer_404(platform, arm):
    """A first model that failed its live smoke test is rolled back to {new: 0}: no slot serves. Azure
    takes it (the SDK strips 0 % entries and PUTs `traffic: {}`); unpinned requests then answer 404
    "No valid deployments to route to", requests pinned to the deployment still reach it."""
    _deployed(platform, arm, "blue")
    platform.set_traffic(EP, {"blue": 100})
    for _ in range(OPERATION_GETS + 1):
        platform.get_endpoint(EP)
    assert platform.invoke(EP, {"close": [1.0] * 20})["forecast"] == [101.5]

    started = platform.set_traffic(EP, {"blue": 0})
    assert (started.state, started.traffic) == ("Updating", {"blue": 0})
    put = arm.find("PUT", rf"/onlineEndpoints/{EP}$")[-1]
    assert put.body["properties"]["traffic"] == {}
    done = [platform.get_endpoint(EP) for _ in range(OPERATION_GETS + 1)][-1]
    assert (done.state, done.traffic) == ("Succeeded", {"blue": 0})
    # Asked again (the activity ran again): already so, nothing more is sent.
    puts = _puts(arm, rf"/onlineEndpoints/{EP}$")
    assert platform.set_traffic(EP, {"blue": 0}).state == "Succeeded"
    assert _puts(arm, rf"/onlineEndpoints/{EP}$") == puts
    with pytest.raises(PlatformError, match="404.*No valid deployments to route to"):
        platform.invoke(EP, {"close": [1.0] * 20})
    assert platform.invoke(EP, {"close": [1.0] * 20}, slot="blue")["forecast"] == [101.5]


@pytest.mark.parametrize(
    "traffic", [{"blue": 50}, {"blue": 90, "green": 20}, {"red": 100}, {"blue": -100, "green": 100}]
)
def test_traffic_that_neither_sums_to_100_nor_is_all_zero_is_refused_before_any_put(platform, arm, traffic):
    _deployed(platform, arm, "blue", "green")
    before = _puts(arm, rf"/onlineEndpoints/{EP}$")
    with pytest.raises(PlatformError, match="sum to 100"):
        platform.set_traffic(EP, traffic)
    assert _puts(arm, rf"/onlineEndpoints/{EP}$") == before


def test_in_azure_a_cycles_traffic_change_is_recorded_once_applied_and_names_its_orchestration(
    platform, arm, use_adapters, tmp_path
):
    """The activities over the azureml adapter with a real SQLite ledger. A cycle's set_traffic records
    nothing when it asks (Azure applies the update later); record_traffic, called once the endpoint serves
    it, records it with the orchestration's id, which Azure's deployment listing (no model tags) cannot
    give. An older cycle's payload still records when asked, as before."""
    import retrain.monitoring.ledger as ledger_module
    from retrain import activities

    ledger = ledger_module.SqliteLedger(tmp_path / "ledger.sqlite")
    use_adapters(platform=platform, ledger=ledger)
    cycle = "retrain-msft-20260105t000000z"
    _deployed(platform, arm, "blue")

    asked = activities.set_traffic(
        {"endpoint": EP, "traffic": {"blue": 100}, "instance_id": cycle, "record_when_applied": True}
    )
    assert asked["state"] == "Updating" and ledger.events(EP) == []  # asked, not applied: not recorded
    for _ in range(OPERATION_GETS + 1):
        platform.get_endpoint(EP)
    assert activities.record_traffic({"endpoint": EP, "traffic": {"blue": 100}, "instance_id": cycle}) == {
        "recorded": True
    }
    [promote] = ledger.events(EP)
    assert (promote.reason, promote.instance_id) == ("promote", cycle)
    assert {s.slot: (s.model_version, s.weight) for s in promote.slots} == {"blue": ("1", 100)}

    # The first model failed its live smoke test: back to no slot, recorded as a rollback, nothing served.
    activities.set_traffic(
        {"endpoint": EP, "traffic": {"blue": 0}, "instance_id": cycle, "record_when_applied": True}
    )
    for _ in range(OPERATION_GETS + 1):
        platform.get_endpoint(EP)
    activities.record_traffic({"endpoint": EP, "traffic": {"blue": 0}, "instance_id": cycle})
    rollback = ledger.events(EP)[-1]
    assert (rollback.reason, rollback.instance_id) == ("rollback", cycle)
    assert {s.slot: s.weight for s in rollback.slots} == {"blue": 0}

    for _ in range(OPERATION_GETS + 1):
        platform.get_endpoint(EP)
    activities.set_traffic({"endpoint": EP, "traffic": {"blue": 100}})  # an older cycle's payload
    older = ledger.events(EP)[-1]
    assert older.reason == "promote" and older.instance_id is None  # Azure gives no id to infer
