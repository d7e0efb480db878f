"""The served ledger per ticker when deployments serve bundles: bundle 1 serves A, B, C; bundle 2 changes
B; a rollback restores bundle 1. Both adapters (SQLite; Azure Table Storage through the real
azure-data-tables client and the recording transport), written through `record_traffic_change` as the
rollout does, and read by `served_ticker`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from retrain.monitoring.ledger import (
    BundleLedger,
    SqliteLedger,
    TableLedger,
    record_traffic_change,
    served_ticker,
    traffic_event,
)
from retrain.ports import BundleRef, EndpointState
from tests.unit.azure_recording_transport import StaticTokenCredential
from tests.unit.table_recording_transport import TableTransport

EP = "fleet-models"
NAME = "fleet-models-bundle"


def entry(ticker: str, version: str) -> dict[str, Any]:
    return {"model_name": f"forecast-{ticker.lower()}", "model_version": version, "family": "ridge"}


B1 = BundleRef(NAME, "1", EP, {t: entry(t, "1") for t in ("A", "B", "C")}, None, ["A", "B", "C"], [], ["c1"])
B2 = BundleRef(NAME, "2", EP, {**B1.tickers, "B": entry("B", "2")}, "1", ["B"], [], ["c2"])


class Platform:
    """The endpoint's state as the rollout leaves it, and the registry's bundles (`get_bundle`)."""

    def __init__(self, bundles: dict[str, BundleRef]) -> None:
        self.state = EndpointState(name=EP, state="Succeeded", traffic={}, deployments={})
        self.bundles = bundles
        self.lookups: list[str] = []

    def get_endpoint(self, name: str) -> EndpointState:
        return self.state

    def register_bundle(
        self, endpoint: str, version: str, parent: Any, changes: Any, ids: Any, removed: Any = None
    ):
        raise AssertionError("the ledger never registers bundles")

    def get_bundle(self, endpoint: str, version: str) -> BundleRef | None:
        self.lookups.append(version)
        return self.bundles.get(version)

    def serve(self, traffic: dict[str, int], slots: dict[str, BundleRef]) -> None:
        deployments = {slot: b.as_model().to_dict() for slot, b in slots.items()}
        self.state = EndpointState(name=EP, state="Succeeded", traffic=traffic, deployments=deployments)


T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def rollouts(ledger: BundleLedger, platform: Platform) -> None:
    """Bundle 1 on blue; bundle 2 (B changed) canaried on green, promoted; then rolled back to bundle 1."""

    def record(
        hours: float, reason: str, traffic: dict[str, int], slots: dict[str, BundleRef], **kw: Any
    ) -> Any:
        platform.serve(traffic, slots)
        return record_traffic_change(
            platform, EP, reason, ledger=ledger, instance_id="rollout-1", at=at(hours), **kw
        )

    # The rollout hands its bundle refs over (as dicts, as an activity payload carries them).
    assert not isinstance(record(0, "deploy", {"blue": 0}, {"blue": B1}, bundles=[B1.to_dict()]), str)
    record(1, "promote", {"blue": 100}, {"blue": B1})
    record(24, "deploy", {"blue": 100, "green": 0}, {"blue": B1, "green": B2}, bundles=[B1, B2])
    record(25, "canary", {"blue": 90, "green": 10}, {"blue": B1, "green": B2})
    record(26, "promote", {"blue": 0, "green": 100}, {"blue": B1, "green": B2})
    # The operator rolls back; nobody passes bundles: the ledger has both maps already.
    record(30, "rollback", {"blue": 100, "green": 0}, {"blue": B1, "green": B2})


def models(answer: dict[str, Any]) -> dict[str, Any]:
    return {(s["model_version"], (s["bundle"] or {}).get("version")): s["weight"] for s in answer["serving"]}


def check_per_ticker(ledger: BundleLedger) -> None:
    assert models(served_ticker(ledger, "B", at(0.5))) == {}  # bundle 1 at 0 %: nothing serves yet
    for ticker in ("A", "B", "C"):
        assert models(served_ticker(ledger, ticker, at(2))) == {("1", "1"): 100}
    canary = served_ticker(ledger, "B", at(25.5))
    assert models(canary) == {("1", "1"): 90, ("2", "2"): 10}
    assert {s["slot"] for s in canary["serving"]} == {"blue", "green"} and canary["endpoint"] == EP
    assert models(served_ticker(ledger, "A", at(25.5))) == {("1", "1"): 90, ("1", "2"): 10}  # A unchanged
    promoted = served_ticker(ledger, "B", at(27))
    assert promoted["serving"] == [
        {
            "endpoint": EP,
            "slot": "green",
            "weight": 100,
            "model_name": "forecast-b",
            "model_version": "2",
            "bundle": {"name": NAME, "version": "2"},
        }
    ]
    assert promoted["reason"] == "promote" and promoted["instance_id"] == "rollout-1"
    back = served_ticker(ledger, "B", at(31))
    assert models(back) == {("1", "1"): 100} and back["reason"] == "rollback"
    assert models(served_ticker(ledger, "C", "2026-11-03T12:00:00Z")) == {("1", "2"): 100}  # C via bundle 2
    assert models(served_ticker(ledger, "C", "2026-11-03")) == {("1", "1"): 100}  # end of day: rolled back
    # A ticker no bundle held is answered with nothing, not another ticker's model.
    assert served_ticker(ledger, "Z", at(27))["serving"] == []
    assert ledger.endpoints_of("B") == [EP] and ledger.endpoints_of("Z") == []


def test_sqlite_ledger_answers_per_ticker_across_bundle_rollouts(tmp_path: Path) -> None:
    platform = Platform({"1": B1, "2": B2})
    ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    rollouts(ledger, platform)
    assert platform.lookups == []  # the refs handed over were enough: no registry lookup
    check_per_ticker(ledger)
    check_per_ticker(SqliteLedger(tmp_path / "ledger.sqlite"))  # durable


def test_table_ledger_answers_per_ticker_through_the_real_tables_client() -> None:
    transport = TableTransport()
    ledger = TableLedger.from_account("stretrainfunc", StaticTokenCredential(), transport=transport)
    platform = Platform({"1": B1, "2": B2})
    rollouts(ledger, platform)
    check_per_ticker(ledger)
    rows = transport.tables["retrainservedledger"]
    # One small entity per (bundle, ticker), a marker per bundle, an index row per (endpoint, ticker).
    assert rows[(f"bundle|{NAME}|2", "B")]["model_version"] == "2"
    assert rows[(f"bundle|{NAME}|2", "~bundle")]["tickers"] == 3
    assert sorted(rk for pk, rk in rows if pk == f"index|{EP}") == ["A", "B", "C"]
    bundle_puts = [c for c in transport.calls if c.method == "PUT" and "PartitionKey='bundle|" in c.path]
    assert len(bundle_puts) == 2 * (3 + 1)  # each bundle written once, however many records name it


def test_a_bundle_not_handed_over_is_read_from_the_registry_once(tmp_path: Path) -> None:
    platform = Platform({"1": B1})
    ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    platform.serve({"blue": 100}, {"blue": B1})
    assert not isinstance(record_traffic_change(platform, EP, "restore", ledger=ledger), str)
    record_traffic_change(platform, EP, "restore", ledger=ledger)
    assert platform.lookups == ["1"]
    assert models(served_ticker(ledger, "C", dt.datetime.now(dt.UTC))) == {("1", "1"): 100}


def test_a_bundle_whose_map_is_lost_is_recorded_and_said_missing_never_guessed(tmp_path: Path) -> None:
    platform = Platform({})  # the registry does not answer for it
    ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    platform.serve({"blue": 100}, {"blue": B2})
    warning = record_traffic_change(platform, EP, "restore", ledger=ledger)
    assert isinstance(warning, str) and f"without the ticker map of {NAME} version 2" in warning
    assert len(ledger.events(EP)) == 1  # the traffic change itself is recorded
    answer = served_ticker(ledger, "B", dt.datetime.now(dt.UTC), [EP])
    assert (
        answer["serving"][0]["model_version"] is None and "no ticker map" in answer["serving"][0]["missing"]
    )


def test_single_model_records_answer_only_for_their_own_ticker(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    v3 = {"name": "forecast-msft", "version": "3"}
    ledger.append(traffic_event("msft-forecast", "promote", {"blue": 100}, {"blue": v3}, at=at(1)))
    answer = served_ticker(ledger, "MSFT", at(2), ["msft-forecast", "fleet-models"])
    assert answer["serving"] == [
        {
            "endpoint": "msft-forecast",
            "slot": "blue",
            "weight": 100,
            "model_name": "forecast-msft",
            "model_version": "3",
            "bundle": None,
        }
    ]
    # The same endpoint asked as another ticker's candidate (not its own) answers nothing.
    assert served_ticker(ledger, "AAPL", at(2), ["aapl-forecast", "msft-forecast"])["serving"] == []


def test_the_route_and_the_cli_answer_per_ticker_from_the_state_dir(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    import json

    import azure.functions as func

    from retrain.cli import main
    from retrain.monitoring.http import served

    state = tmp_path / "state"
    ledger = SqliteLedger(state / "monitoring" / "ledger.sqlite")
    platform = Platform({"1": B1, "2": B2})
    rollouts(ledger, platform)
    monkeypatch.setenv("RETRAIN_STATE_DIR", str(state))
    request = func.HttpRequest(
        "GET", "/api/served/b", body=b"", route_params={"ticker": "b"}, params={"at": "2026-11-03T12:00:00Z"}
    )
    answer = json.loads(served(request).get_body())
    assert answer["ticker"] == "B" and answer["endpoint"] == EP
    assert [
        (s["model_version"], s["bundle"]["version"], s["slot"], s["weight"]) for s in answer["serving"]
    ] == [("2", "2", "green", 100)]
    assert main(["served", "--ticker", "B", "--at", "2026-11-03T12:00:00Z", "--state-dir", str(state)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["serving"] == answer["serving"]
