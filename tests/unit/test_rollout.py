"""The endpoint's rollout orchestration (retrain/rollout.py) and a cycle's wait for it, driven by the fake
durable context of test_workflow.py: its `World` answers the endpoint activities, this one adds the
bundles, the awaiting cycles and the outcomes the rollout tells them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from retrain import rollout
from retrain.activities import report_failures
from retrain.monitoring.ledger import SqliteLedger, record_traffic_change, served_ticker
from retrain.ports import EndpointState
from retrain.rollout import rollout_orchestrator
from tests.unit.test_workflow import (
    START,
    ActivityTask,
    FakeContext,
    TimerTask,
    World,
    _scheduled,
    completed_event,
    drive,
)

ENDPOINT = "fleet-models"
ROLLOUT = "rollout-fleet-models-20260105t000000000000z"


def model(ticker: str, version: str) -> dict[str, Any]:
    return {"name": f"{ticker.lower()}-forecaster", "version": version, "tags": {}}


@dataclass
class Fleet(World):
    bundles: dict[str, dict[str, Any]] = field(default_factory=dict)
    waiting: list[dict[str, Any]] = field(default_factory=list)  # what pending_rollouts finds
    broken_tickers: set[str] = field(default_factory=set)  # their new model fails on the idle slot
    earlier_rollout: str | None = None

    def get_endpoint(self, p: dict[str, Any]) -> dict[str, Any]:
        state = super().get_endpoint(p)
        serving = {
            s: {"name": f"{ENDPOINT}-bundle", "version": v, "tags": {"bundle": "true"}}
            for s, v in self.slots.items()
        }
        return {**state, "deployments": serving}

    slots: dict[str, str] = field(default_factory=dict)  # slot -> bundle version deployed

    def begin_deployment(self, p: dict[str, Any]) -> dict[str, Any]:
        self.slots[p["slot"]] = p["model"]["version"]
        return super().begin_deployment(p)

    def earlier_active_rollout(self, p: dict[str, Any]) -> str | None:
        return self.earlier_rollout

    def pending_rollouts(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"challengers": self.waiting, "superseded": []}

    def get_bundle(self, p: dict[str, Any]) -> dict[str, Any] | None:
        return self.bundles.get(p["version"])

    def next_bundle_version(self, p: dict[str, Any]) -> dict[str, Any]:
        version = int(p["after"]) + 1
        while str(version) in self.bundles:
            version += 1
        return {"version": str(version)}

    def register_bundle(self, p: dict[str, Any]) -> dict[str, Any]:
        tickers = dict((p["parent"] or {}).get("tickers") or {})
        for t, m in p["changes"].items():
            tickers[t] = {"model_name": m["name"], "model_version": m["version"]}
        parent = (p["parent"] or {}).get("version")
        self.bundles[p["version"]] = bundle = {
            "name": f"{ENDPOINT}-bundle",
            "version": p["version"],
            "endpoint": ENDPOINT,
            "tickers": tickers,
            "parent_version": parent,
            "changed": sorted(p["changes"]),
            "orchestration_ids": p["orchestration_ids"],
        }
        return bundle

    def smoke_test(self, p: dict[str, Any]) -> dict[str, Any]:
        if p["slot"] and p["ticker"] in self.broken_tickers and p["expect_versions"] != ["1"]:
            return {"ok": False, "reason": "forecast nan is not a finite number"}
        return super().smoke_test(p)

    def smoke_test_many(self, p: dict[str, Any]) -> dict[str, Any]:
        common = {k: p[k] for k in ("endpoint", "slot", "max_latency_ms")}
        return {t["ticker"]: self.smoke_test({**common, **t}) for t in p["tests"]}

    def set_champions(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"set": len(p["models"])}

    def champions(self) -> list[tuple[str, str]]:
        return [(m["name"], m["version"]) for p in self.calls("set_champions") for m in p["models"]]

    def smoke_tests(self) -> list[dict[str, Any]]:
        """Every ticker's test, with the slot of its activity, in order."""
        return [{**t, "slot": p["slot"]} for p in self.calls("smoke_test_many") for t in p["tests"]]

    def rollout_outcomes(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"told": [o["instance_id"] for o in p["outcomes"]], "missed": []}

    def told(self) -> dict[str, dict[str, Any]]:
        return {o["ticker"]: o for p in self.calls("rollout_outcomes") for o in p["outcomes"]}


class RolloutContext(FakeContext):
    def __init__(self, data: dict[str, Any]):
        super().__init__(data)
        self.instance_id = ROLLOUT
        self.continued: dict[str, Any] | None = None

    def continue_as_new(self, input_: Any) -> None:
        self.continued = input_


def run_rollout(world: Fleet, history: list[Any] | None = None) -> tuple[Any, RolloutContext]:
    context = RolloutContext({"endpoint": ENDPOINT, "canary_percent": 10})
    context.histories = history or []
    gen = rollout_orchestrator(context)
    value: Any = None
    for _ in range(2000):
        try:
            task = gen.send(value)
        except StopIteration as stop:
            return stop.value, context
        if isinstance(task, ActivityTask):
            value = report_failures(world.activity(task.name))(task.payload)
        else:
            assert isinstance(task, TimerTask)
            context.current_utc_datetime, value = task.fire_at, None
    raise AssertionError("the rollout did not finish")


def serving_bundle_1() -> Fleet:
    bundle = {
        "name": f"{ENDPOINT}-bundle",
        "version": "1",
        "endpoint": ENDPOINT,
        "tickers": {
            "MSFT": {"model_name": "msft-forecaster", "model_version": "1"},
            "AAPL": {"model_name": "aapl-forecaster", "model_version": "1"},
            "IBM": {"model_name": "ibm-forecaster", "model_version": "1"},
        },
    }
    world = Fleet(
        traffic={"blue": 100}, deployments={"blue": "Succeeded"}, bundles={"1": bundle}, slots={"blue": "1"}
    )
    world.waiting = [
        {"instance_id": f"retrain-{t.lower()}-1", "ticker": t, "model": model(t, "2"), "closes": [100.0] * 64}
        for t in ("AAPL", "MSFT")
    ]
    return world


def test_a_batch_goes_out_as_one_bundle_and_each_cycle_hears_deployed():
    world = serving_bundle_1()
    _, context = run_rollout(world)
    assert [p["version"] for p in world.calls("register_bundle")] == ["2"]
    assert world.bundles["2"]["parent_version"] == "1" and world.bundles["2"]["changed"] == ["AAPL", "MSFT"]
    assert world.traffic_asked()[-2:] == [
        {"endpoint": ENDPOINT, "traffic": {"blue": 90, "green": 10}},
        {"endpoint": ENDPOINT, "traffic": {"green": 100, "blue": 0}},
    ]
    unchanged = [t for t in world.smoke_tests() if t["ticker"] == "IBM"]
    assert unchanged and unchanged[0]["expect_versions"] == ["1"]  # the rest of the bundle still answers
    assert unchanged[0]["slot"] == "green" and unchanged[0]["plausible"] is False
    assert {t: (o["outcome"], o["bundle_version"]) for t, o in world.told().items()} == {
        "AAPL": ("deployed", "2"),
        "MSFT": ("deployed", "2"),
    }
    assert world.champions() == [("aapl-forecaster", "2"), ("msft-forecaster", "2")]
    assert world.calls("set_champions")[0]["models"][0]["tags"] == {}  # name and version are enough
    # One activity per phase, whatever the number of tickers: idle slot (with the unchanged sample),
    # canary slot, stable URL; then one for the champions.
    assert [p["slot"] for p in world.calls("smoke_test_many")] == ["green", "green", None]
    assert "smoke_test" not in world.names() and "set_champion" not in world.names()
    assert context.continued is not None  # the next batch
    assert context.continued["answered"] == {"retrain-aapl-1": "2", "retrain-msft-1": "2"}


def serving_many(n: int) -> Fleet:
    """Bundle 1 serves n tickers from blue; each has a challenger (version 2) waiting."""
    world = serving_bundle_1()
    tickers = [f"T{i:03d}" for i in range(n)]
    world.bundles["1"]["tickers"] = {
        t: {"model_name": model(t, "1")["name"], "model_version": "1"} for t in tickers
    }
    lineage = {"model_family": "ridge", "fitted_data_end": "2026-01-02", "gate_reasons": "x" * 500}
    world.waiting = [
        {
            "instance_id": f"retrain-{t.lower()}-1",
            "ticker": t,
            "model": {**model(t, "2"), "tags": lineage},
            "closes": [100.0] * 64,
        }
        for t in tickers
    ]
    return world


def test_the_activities_of_a_rollout_do_not_grow_with_its_tickers(monkeypatch):
    few, many = serving_many(2), serving_many(40)
    run_rollout(few)
    run_rollout(many)
    assert few.names() == many.names()  # the same activities, the same number of history events
    assert {o["outcome"] for o in many.told().values()} == {"deployed"} and len(many.told()) == 40
    (registered,) = many.calls("register_bundle")
    # register_bundle reads only the family and the data end of a model's tags; the ledger's bundle
    # records only the ticker map (no orchestration ids).
    assert registered["changes"]["T000"]["tags"] == {"model_family": "ridge", "fitted_data_end": "2026-01-02"}
    deploy = many.calls("begin_deployment")[0]
    assert [set(b) for b in deploy["bundles"]] == [
        {"name", "version", "endpoint", "parent_version", "tickers"}
    ] * 2
    # Past PER_ACTIVITY tickers a phase takes a few activities, never one per ticker.
    monkeypatch.setattr(rollout, "PER_ACTIVITY", 16)
    chunked = serving_many(40)
    run_rollout(chunked)
    sizes = [len(p["tests"]) for p in chunked.calls("smoke_test_many")]
    assert sizes == [16, 16, 8] * 3 and [len(p["models"]) for p in chunked.calls("set_champions")] == [
        16,
        16,
        8,
    ]
    assert {o["outcome"] for o in chunked.told().values()} == {"deployed"}


def test_an_unchanged_ticker_failing_on_the_idle_slot_fails_the_rollout_before_traffic_moves():
    world = serving_bundle_1()
    world.smoke_test = lambda p: (  # type: ignore[method-assign]  # unchanged IBM answers NaN on green
        {"ok": False, "reason": "forecast nan is not a finite number"}
        if p["ticker"] == "IBM" and p["slot"]
        else Fleet.smoke_test(world, p)
    )
    run_rollout(world)
    told = world.told()
    assert {o["outcome"] for o in told.values()} == {"failed"}
    assert (
        "unchanged ticker IBM" in told["MSFT"]["reason"]
        and "previous bundle keeps serving" in told["MSFT"]["reason"]
    )
    assert world.calls("set_traffic") == [] and world.calls("set_champions") == []


def test_champions_the_platform_refuses_are_a_warning_and_the_others_are_set():
    world = serving_bundle_1()
    world.set_champions = lambda p: {"set": 1, "failed": {"aapl-forecaster:2": "tag update refused"}}  # type: ignore[method-assign]
    run_rollout(world)
    told = world.told()
    assert {o["outcome"] for o in told.values()} == {"deployed"}
    assert told["MSFT"]["warnings"] == ["set_champion of aapl-forecaster:2 failed: tag update refused"]


def test_a_rollout_started_by_the_per_ticker_code_replays_per_ticker():
    world = serving_bundle_1()
    # Its history already scheduled a per-ticker smoke test: the replay must schedule what that code did.
    history = [_scheduled("earlier_active_rollout"), _scheduled("smoke_test")]
    run_rollout(world, history)
    assert "smoke_test_many" not in world.names() and "set_champions" not in world.names()
    smoked = [(p["ticker"], p["slot"]) for p in world.calls("smoke_test")]
    assert smoked == [("AAPL", "green"), ("MSFT", "green"), ("IBM", "green")] + [
        ("AAPL", "green"),
        ("MSFT", "green"),
        ("AAPL", None),
        ("MSFT", None),
    ]
    assert [p["model"]["version"] for p in world.calls("set_champion")] == ["2", "2"]
    assert {o["outcome"] for o in world.told().values()} == {"deployed"}


class LedgerFleet(Fleet):
    """A Fleet whose deploy and traffic records go to a real served ledger, as activities.py's do, from
    the payloads the rollout sends; the registry is never asked (`get_bundle` fails the test)."""

    ledger: Any = None

    def get_endpoint_state(self, name: str) -> EndpointState:
        model = {"name": f"{ENDPOINT}-bundle", "tags": {"bundle": "true"}}
        live = {s: {**model, "version": v} for s, v in self.slots.items() if s in self.deployments}
        return EndpointState(name=name, state="Succeeded", traffic=dict(self.traffic), deployments=live)

    def begin_deployment(self, p: dict[str, Any]) -> dict[str, Any]:
        started = super().begin_deployment(p)
        self._record(p, "deploy", new_model=(p["slot"], p["model"]))
        return started

    def record_traffic(self, p: dict[str, Any]) -> dict[str, Any]:
        self._record(p, p.get("reason"), traffic=p["traffic"])
        return {"recorded": True}

    def _record(self, p: dict[str, Any], reason: str | None, **change: Any) -> None:
        class Registry:
            get_endpoint = self.get_endpoint_state

            def get_bundle(self, endpoint: str, version: str) -> None:
                raise AssertionError(f"bundle {version} should have come with the record")

        recorded = record_traffic_change(
            Registry(),
            p["endpoint"],
            reason,
            ledger=self.ledger,
            instance_id=p["instance_id"],
            bundles=p.get("bundles") or (),
            **change,
        )
        assert not isinstance(recorded, str), recorded


def test_the_served_ledger_answers_each_tickers_model_and_bundle_after_a_rollout(tmp_path):
    world = LedgerFleet(**vars(serving_bundle_1()))
    world.ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    run_rollout(world)
    records = world.calls("begin_deployment") + world.calls("record_traffic")
    assert records and {p["instance_id"] for p in records} == {ROLLOUT}
    assert all([b["version"] for b in p["bundles"]] == ["1", "2"] for p in records)
    now = datetime.now(UTC)  # the ledger stamps each record with the time it is written
    for ticker, version in (("MSFT", "2"), ("AAPL", "2"), ("IBM", "1")):
        (entry,) = served_ticker(world.ledger, ticker, now)["serving"]
        assert (entry["endpoint"], entry["slot"], entry["weight"]) == (ENDPOINT, "green", 100)
        assert (entry["model_name"], entry["model_version"]) == (f"{ticker.lower()}-forecaster", version)
        assert entry["bundle"] == {"name": f"{ENDPOINT}-bundle", "version": "2"}


def test_a_ticker_failing_on_the_idle_slot_is_left_out_and_the_others_go_on():
    world = serving_bundle_1()
    world.broken_tickers = {"AAPL"}
    run_rollout(world)
    assert [p["version"] for p in world.calls("register_bundle")] == ["2", "3"]
    assert world.bundles["3"]["parent_version"] == "1" and world.bundles["3"]["changed"] == ["MSFT"]
    told = world.told()
    assert told["MSFT"]["outcome"] == "deployed" and told["MSFT"]["bundle_version"] == "3"
    assert told["AAPL"]["outcome"] == "left_out" and "smoke test of AAPL" in told["AAPL"]["reason"]
    assert world.bundles["3"]["tickers"]["AAPL"]["model_version"] == "1"  # its old model keeps serving
    assert world.champions() == [("msft-forecaster", "2")]


def test_a_failure_once_the_canary_serves_rolls_back_and_every_changed_cycle_fails():
    world = serving_bundle_1()
    world.broken_live = True  # the stable URL answers garbage during the canary
    run_rollout(world)
    assert world.traffic_asked()[-1] == {"endpoint": ENDPOINT, "traffic": {"blue": 100, "green": 0}}
    told = world.told()
    assert {o["outcome"] for o in told.values()} == {"failed"}
    assert all("traffic is back on blue" in o["reason"] for o in told.values())
    assert world.calls("set_champions") == []


def test_a_challenger_already_served_is_answered_without_a_rollout_and_none_waiting_ends():
    world = serving_bundle_1()
    world.waiting = [
        {"instance_id": "retrain-ibm-1", "ticker": "IBM", "model": model("IBM", "1"), "closes": []}
    ]
    run_rollout(world)
    assert world.told()["IBM"]["outcome"] == "deployed" and world.calls("register_bundle") == []
    world = serving_bundle_1()
    world.waiting = []
    output, context = run_rollout(world)
    assert output["status"] == "idle" and context.continued is None


def test_a_later_rollout_of_the_endpoint_gives_way():
    world = serving_bundle_1()
    world.earlier_rollout = "rollout-fleet-models-20260104t000000000000z"
    output, _ = run_rollout(world)
    assert output["status"] == "skipped" and world.names() == ["earlier_active_rollout"]


class CycleWorld(World):
    def request_rollout(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"instance_id": ROLLOUT, "started": True}


def test_a_cycle_with_a_serving_target_waits_for_its_outcome():
    outcome = {
        "outcome": "deployed",
        "model": model("MSFT", "1"),
        "bundle": f"{ENDPOINT}-bundle",
        "bundle_version": "4",
        "rollout": ROLLOUT,
        "slot": "green",
        "old_slot": "blue",
    }
    world = CycleWorld(events=[completed_event(), {**outcome, "model": model("MSFT", "9")}, outcome])
    out = drive(world, serving_target=ENDPOINT, naming_version=2, rollout_poll_minutes=2.0)
    assert out.error is None, out.error
    assert out.output is not None
    assert {k: out.output[k] for k in ("status", "endpoint", "model_version", "bundle_version")} == {
        "status": "deployed",
        "endpoint": ENDPOINT,
        "model_version": "1",
        "bundle_version": "4",
    }
    assert "begin_deployment" not in world.names()  # the rollout deploys, not the cycle
    assert world.calls("request_rollout")[0]["rollout"]["endpoint"] == ENDPOINT
    assert out.status["awaiting_rollout"] is None


def test_a_cycle_left_out_fails_with_the_reason_and_one_asks_again_on_its_timer():
    left = {
        "outcome": "left_out",
        "model": model("MSFT", "1"),
        "rollout": ROLLOUT,
        "reason": "smoke test of MSFT on slot green: forecast nan; its previous model keeps serving",
    }
    world = CycleWorld(events=[completed_event()])
    world_events = world.events
    original = world.request_rollout

    def request_then_answer(p: dict[str, Any]) -> dict[str, Any]:
        if len(world.calls("request_rollout")) == 2:  # the outcome comes after the second request
            world_events.append(left)
        return original(p)

    world.request_rollout = request_then_answer  # type: ignore[method-assign]
    out = drive(world, serving_target=ENDPOINT, naming_version=2)
    assert out.error is not None and "left out by rollout" in out.error and "forecast nan" in out.error
    assert len(world.calls("request_rollout")) == 2 and ("poll_timer", None) in world.log
    assert START + out.elapsed > START


def test_smoke_test_many_refuses_a_payload_it_cannot_judge_saying_what_to_send():
    from retrain.activities import set_champions, smoke_test_many

    base = {"endpoint": ENDPOINT, "slot": "green", "max_latency_ms": 2000}
    twice = {"ticker": "MSFT", "closes": [1.0], "expect_versions": ["2"], "plausible": True}
    for payload, said in (
        ({**base, "tests": [twice, twice]}, "MSFT more than once; send each ticker once"),
        ({**base, "tests": [{"closes": [1.0]}]}, 'send "tests": [{"ticker"'),
        ({**base}, 'send "tests"'),
    ):
        answer = report_failures(smoke_test_many)(payload)  # permanent: reported, not retried
        assert answer["activity_error"]["kind"] == "permanent" and said in answer["activity_error"]["message"]
    answer = report_failures(set_champions)({"models": {"name": "x"}})
    assert 'send "models": [{"name", "version"}' in answer["activity_error"]["message"]
