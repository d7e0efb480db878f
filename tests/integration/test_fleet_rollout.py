"""Fleet serving through the real local host: cycles of several tickers share one endpoint, and their
challengers go out together through the endpoint's rollout orchestration (retrain/rollout.py) as model
bundles, on the in-memory platform (which serves a bundle per ticker, as scorer/score.py does). Each
`{"ticker"}` request is a fleet of one; separate fleets' challengers still share a rollout."""

from __future__ import annotations

import threading
import time

from retrain import naming
from retrain.host_client import http_json
from tests.helpers import outcome, start, wait

ENDPOINT = "fleet-models"  # the default layout (shared_endpoint)


def _start_all(host, tickers):
    ids = []
    for ticker in tickers:
        code, answer = start(host, {"ticker": ticker})
        assert code == 202, answer
        ids.append(answer["id"])
    return [outcome(wait(host, i, timeout=90), t) for i, t in zip(ids, tickers, strict=True)]


def test_cycles_of_one_endpoint_roll_out_together_and_a_failing_ticker_is_left_out(
    host, memory, monkeypatch, shared_endpoint
):
    monkeypatch.setenv(
        "RETRAIN_ROLLOUT_POLL_MINUTES", "0.05"
    )  # a cycle a finishing rollout missed asks again in 3 s
    memory.script.broken_models = {f"{naming.model_name('IBM')}:1"}  # IBM's first model answers NaN
    msft, aapl, ibm = _start_all(host, ["MSFT", "AAPL", "IBM"])

    for out in (msft, aapl):
        assert out["status"] == "deployed" and out["endpoint"] == ENDPOINT and out["model_version"] == "1", (
            out
        )
        assert out["bundle"] == naming.bundle_name(ENDPOINT) and out["bundle_version"]
        assert out["rollout"].startswith(naming.rollout_instance_prefix(ENDPOINT))
    assert ibm["status"] == "failed", ibm
    assert "left out" in ibm["error"] and "smoke test of IBM" in ibm["error"], ibm["error"]
    assert "previous model keeps serving" in ibm["error"]

    # Batched: at most a few bundles, each registered once per rollout, never two operations at once
    # (the platform refuses a second one with 409, recorded as "busy"), and a bundle version per rollout.
    registered = [arg for call, arg in memory.calls if call == "register_bundle"]
    assert 1 <= len({v for _, v, _ in registered}) <= 4
    assert not [c for c in memory.calls if c[0] == "busy"]
    assert [c for c in memory.calls if c[0] == "score_batch"]  # the smoke tests: batch requests
    serving = memory.endpoints[ENDPOINT]
    live = max(serving["traffic"], key=serving["traffic"].get)
    bundle = memory.bundles[(ENDPOINT, serving["slots"][live]["model"]["version"])]
    assert set(bundle.tickers) == {"MSFT", "AAPL"}  # IBM never served
    for done, ticker in ((msft, "MSFT"), (aapl, "AAPL")):  # the bundle each fleet names holds its model
        named = memory.bundles[(ENDPOINT, done["bundle_version"])]
        assert named.tickers[ticker]["model_version"] == "1" and ticker in named.changed
    assert memory.champions == {naming.model_name("MSFT"): "1", naming.model_name("AAPL"): "1"}
    # Every endpoint write of a rollout finished before the next rollout's first (deploy, traffic, traffic).
    deploys = [op for op in memory.operations if op[1] == "deploy"]
    assert [op[3] for op in deploys] == [naming.bundle_name(ENDPOINT)] * len(deploys)

    # IBM again, fixed: joins the bundle beside the others, whose models keep serving.
    memory.script.broken_models = set()
    (again,) = _start_all(host, ["IBM"])
    assert again["status"] == "deployed", again
    latest = memory.bundles[(ENDPOINT, again["bundle_version"])]
    assert {t: e["model_version"] for t, e in latest.tickers.items()} == {
        "MSFT": "1",
        "AAPL": "1",
        "IBM": "2",
    }
    assert latest.parent_version == bundle.version and latest.changed == ["IBM"]

    # The served ledger answers per ticker through the bundle, from the rollout's own records.
    for ticker, version in (("MSFT", "1"), ("AAPL", "1"), ("IBM", "2")):
        code, answer = http_json("GET", f"{host.url}/api/served/{ticker}?code={host.function_key}")
        assert code == 200, answer
        (entry,) = answer["serving"]
        assert (entry["endpoint"], entry["weight"], entry["model_version"]) == (ENDPOINT, 100, version)
        assert entry["bundle"] == {"name": naming.bundle_name(ENDPOINT), "version": latest.version}
        assert answer["instance_id"].startswith(naming.rollout_instance_prefix(ENDPOINT))


def test_a_challenger_arriving_while_a_rollout_runs_joins_the_next_one(host, memory, shared_endpoint):
    gate = threading.Event()
    memory.script.deploy_gate = gate  # the first rollout's deployment waits until AAPL waits too
    code, msft = start(host, {"ticker": "MSFT"})
    assert code == 202, msft
    try:
        assert memory.script.deploying.wait(60), "the rollout never began its deployment"
        code, aapl = start(host, {"ticker": "AAPL"})
        assert code == 202, aapl
        deadline = time.monotonic() + 60
        # AAPL's fleet awaits the endpoint's rollout (its status says so, which the rollout reads).
        while not ((host.engine.get_status(aapl["id"]) or {}).get("customStatus") or {}).get(
            "awaiting_rollout"
        ):
            assert time.monotonic() < deadline, "AAPL never awaited the rollout"
            time.sleep(0.05)
    finally:
        gate.set()
    first = outcome(wait(host, msft["id"], timeout=90), "MSFT")
    second = outcome(wait(host, aapl["id"], timeout=90), "AAPL")
    assert first["status"] == second["status"] == "deployed", (first, second)
    assert (first["bundle_version"], second["bundle_version"]) == ("1", "2")
    assert second["rollout"] == first["rollout"]  # the same rollout's next batch
    bundle = memory.bundles[(ENDPOINT, "2")]
    assert (
        bundle.parent_version == "1"
        and bundle.changed == ["AAPL"]
        and set(bundle.tickers) == {"MSFT", "AAPL"}
    )
    assert not [c for c in memory.calls if c[0] == "busy"]  # never two endpoint operations at once
