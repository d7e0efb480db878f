"""The served ledger: which model versions served at a moment, across a swap and a rollback, in both
adapters (SQLite; Azure Table Storage through the real azure-data-tables client and a recording transport)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from retrain.monitoring.ledger import (
    APPEND_ATTEMPTS,
    LedgerError,
    ServedLedger,
    SqliteLedger,
    TableLedger,
    TrafficEvent,
    format_time,
    infer_reason,
    parse_time,
    record_traffic_change,
    served_at,
    traffic_event,
)
from retrain.ports import EndpointState
from retrain.state_files import StateError
from tests.unit.azure_recording_transport import StaticTokenCredential
from tests.unit.table_recording_transport import TableTransport

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
V1 = {"name": "msft-forecaster", "version": "1"}
V2 = {"name": "msft-forecaster", "version": "2"}
V3 = {"name": "msft-forecaster", "version": "3"}


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def history() -> list:
    """v1 rolled out; v2 swapped in (deploy, canary, promote, retire); v3 canaried and rolled back."""
    ep = "msft-forecast"
    return [
        traffic_event(ep, "deploy", {}, {"blue": V1}, at=at(0), instance_id="i1"),
        traffic_event(ep, "promote", {"blue": 100}, {"blue": V1}, at=at(1), instance_id="i1"),
        traffic_event(ep, "deploy", {"blue": 100}, {"blue": V1, "green": V2}, at=at(24), instance_id="i2"),
        traffic_event(ep, "canary", {"blue": 90, "green": 10}, {"blue": V1, "green": V2}, at=at(25)),
        traffic_event(ep, "promote", {"blue": 0, "green": 100}, {"blue": V1, "green": V2}, at=at(26)),
        traffic_event(ep, "retire", {"green": 100}, {"green": V2}, at=at(27)),
        traffic_event(ep, "deploy", {"green": 100}, {"green": V2, "blue": V3}, at=at(48), instance_id="i3"),
        traffic_event(ep, "canary", {"green": 90, "blue": 10}, {"green": V2, "blue": V3}, at=at(49)),
        traffic_event(ep, "rollback", {"green": 100, "blue": 0}, {"green": V2, "blue": V3}, at=at(50)),
    ]


def versions(answer: dict) -> dict[str, int]:
    return {s["model_version"]: s["weight"] for s in answer["serving"]}


def check_answers(ledger: ServedLedger) -> None:
    for event in history():
        ledger.append(event)
    events = ledger.events("msft-forecast")
    assert [e.reason for e in events] == [e.reason for e in history()]
    assert versions(served_at(events, at(-1))) == {}  # before anything was deployed
    assert versions(served_at(events, at(0.5))) == {}  # v1 deployed at 0 %: nothing serves yet
    assert versions(served_at(events, at(2))) == {"1": 100}
    assert versions(served_at(events, at(24.5))) == {"1": 100}  # v2 deployed at 0 %
    assert versions(served_at(events, at(25.5))) == {"1": 90, "2": 10}  # the canary
    assert versions(served_at(events, at(26))) == {"2": 100}  # the swap, at its exact time
    assert versions(served_at(events, at(49.5))) == {"2": 90, "3": 10}
    answer = served_at(events, at(51))
    assert versions(answer) == {"2": 100} and answer["reason"] == "rollback"  # v3 rolled back
    assert answer["since"] == "2026-11-04T11:00:00.000000Z"
    # Reading only up to a moment gives the same answer as filtering in memory.
    assert versions(served_at(ledger.events("msft-forecast", until=at(25.5)), at(25.5))) == {"1": 90, "2": 10}
    assert ledger.events("aapl-forecast") == []


def test_sqlite_ledger_answers_across_a_swap_and_a_rollback(tmp_path: Path) -> None:
    check_answers(SqliteLedger(tmp_path / "ledger.sqlite"))
    # The ledger is durable: a new instance on the same file sees the same events.
    assert len(SqliteLedger(tmp_path / "ledger.sqlite").events("msft-forecast")) == len(history())


def test_table_ledger_answers_the_same_through_the_real_tables_client() -> None:
    transport = TableTransport()
    ledger = TableLedger.from_account("stretrainfunc", StaticTokenCredential(), transport=transport)
    check_answers(ledger)
    creates = [c for c in transport.calls if c.method == "POST" and c.path == "/Tables"]
    assert len(creates) == 1  # the table is created once per ledger instance
    put = next(c for c in transport.calls if c.method == "PUT")
    assert put.host == "stretrainfunc.table.core.windows.net"
    assert put.path.startswith(
        "/retrainservedledger(PartitionKey='msft-forecast',RowKey='2026-11-02T09:00:00"
    )
    assert put.headers["Authorization"] == "Bearer offline-test-token"  # identity, no account key
    query = [c for c in transport.calls if c.method == "GET"][-1]
    assert query.query["$filter"] == ["PartitionKey eq 'aapl-forecast'"]
    # A second ledger instance on an existing table: the 409 of create_table is fine.
    TableLedger.from_account("stretrainfunc", StaticTokenCredential(), transport=transport).append(
        history()[0]
    )


def test_date_only_means_end_of_day_and_bad_input_says_what_to_send(tmp_path: Path) -> None:
    events = history()
    assert versions(served_at(events, "2026-11-03")) == {"2": 100}  # end of 3 Nov: after the swap
    assert versions(served_at(events, "2026-11-02T12:00:00+02:00")) == {"1": 100}
    with pytest.raises(LedgerError, match="ISO 8601"):
        served_at(events, "yesterday")
    with pytest.raises(LedgerError, match="reason 'swap'"):
        traffic_event("e", "swap", {"blue": 100})
    with pytest.raises(LedgerError, match="add up to 90"):
        traffic_event("e", "canary", {"blue": 80, "green": 10})


def test_reasons_are_inferred_from_the_traffic_table() -> None:
    assert infer_reason({"blue": 90, "green": 10}, {"blue": V1, "green": V2}) == "canary"
    assert infer_reason({"blue": 0, "green": 100}, {"blue": V1, "green": V2}) == "promote"
    assert infer_reason({"green": 100, "blue": 0}, {"green": V2, "blue": V3}) == "rollback"
    assert infer_reason({}, {"blue": V1}) == "rollback"


class _Platform:
    def __init__(self, state: EndpointState) -> None:
        self.state = state

    def get_endpoint(self, name: str) -> EndpointState:
        return self.state


def test_record_traffic_change_takes_models_from_the_endpoint_and_never_raises(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    tagged = {**V2, "tags": {"orchestration_instance_id": "retrain-msft-x"}}
    platform = _Platform(
        EndpointState(
            name="msft-forecast", state="Succeeded", traffic={"blue": 100}, deployments={"blue": V1}
        )
    )
    event = record_traffic_change(
        platform, "msft-forecast", "deploy", new_model=("green", tagged), ledger=ledger
    )
    assert event is not None and event.instance_id == "retrain-msft-x"
    assert {(s.slot, s.weight, s.model_version) for s in event.slots} == {
        ("blue", 100, "1"),
        ("green", 0, "2"),
    }
    platform.state = EndpointState(
        name="msft-forecast",
        state="Succeeded",
        traffic={"blue": 0, "green": 100},
        deployments={"blue": V1, "green": tagged},
    )
    promoted = record_traffic_change(
        platform, "msft-forecast", None, traffic={"blue": 0, "green": 100}, ledger=ledger
    )
    assert promoted.reason == "promote"
    retired = record_traffic_change(platform, "msft-forecast", "retire", removed_slot="blue", ledger=ledger)
    assert [s.slot for s in retired.slots] == ["green"]
    assert [e.reason for e in ledger.events("msft-forecast")] == ["deploy", "promote", "retire"]
    # A broken record is logged and returned as a warning, not raised: the rollout goes on.
    lost = record_traffic_change(platform, "msft-forecast", "swap", ledger=ledger)
    assert isinstance(lost, str) and "swap change on msft-forecast was NOT recorded" in lost


@pytest.mark.parametrize(
    "text, says",
    [
        ("0999-06-01", "before 1970"),  # as text it sorted after 2026: today's model answered
        ("1900-01-01T00:00:00Z", "before 1970"),
        ("9999-12-31T23:59:59-01:00", "past year 9999"),  # OverflowError (500) before
        ("20261127", "not ISO 8601"),
        ("2026-W48-1", "not ISO 8601"),
        ("2026-11-27T17:30:00Z\nx", "not ISO 8601"),
        ("x" * 1_000_000, "not ISO 8601"),
    ],
)
def test_times_the_ledger_cannot_order_are_refused_with_what_to_send(text: str, says: str) -> None:
    with pytest.raises(LedgerError, match=says) as caught:
        served_at(history(), text)
    assert "send an ISO 8601 time from 1970 on" in str(caught.value)
    assert len(str(caught.value)) < 300  # a huge value is not echoed


def test_formatted_times_are_fixed_width_so_text_order_is_time_order() -> None:
    early = format_time(dt.datetime(999, 6, 1, tzinfo=dt.UTC))
    assert early == "0999-06-01T00:00:00.000000Z"
    assert early < format_time(T0)
    assert parse_time("2026-11-27T17:30Z") == dt.datetime(2026, 11, 27, 17, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "content, says",
    [(b"this is not a database" * 100, "is corrupt"), (None, "cannot be opened")],
)
def test_a_bad_ledger_file_is_a_state_error_that_names_it(tmp_path: Path, content, says) -> None:
    path = tmp_path / "ledger.sqlite"
    if content is None:
        path.mkdir()  # what a read-only state dir does to SQLite, also for root
    else:
        path.write_bytes(content)
    with pytest.raises(StateError, match=says) as caught:
        SqliteLedger(path).events("msft-forecast")
    assert str(path) in str(caught.value) and caught.value.path == path


class _FlakyLedger:
    """A ServedLedger whose store fails its first `failures` appends (a locked or briefly absent file)."""

    def __init__(self, inner: SqliteLedger, failures: int) -> None:
        self.inner, self.failures, self.attempts = inner, failures, 0

    def append(self, event) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise sqlite3.OperationalError("database is locked")
        self.inner.append(event)

    def events(self, endpoint, until=None):
        return self.inner.events(endpoint, until)


def test_a_failing_append_is_retried_then_reported_never_dropped_silently(tmp_path: Path) -> None:
    platform = _Platform(
        EndpointState(
            name="msft-forecast", state="Succeeded", traffic={"blue": 100}, deployments={"blue": V1}
        )
    )
    recovers = _FlakyLedger(SqliteLedger(tmp_path / "ledger.sqlite"), failures=APPEND_ATTEMPTS - 1)
    event = record_traffic_change(platform, "msft-forecast", "restore", ledger=recovers)
    assert isinstance(event, TrafficEvent) and recovers.attempts == APPEND_ATTEMPTS
    assert [e.event_id for e in recovers.events("msft-forecast")] == [event.event_id]
    never = _FlakyLedger(SqliteLedger(tmp_path / "other.sqlite"), failures=APPEND_ATTEMPTS)
    lost = record_traffic_change(platform, "msft-forecast", "restore", ledger=never)
    assert isinstance(lost, str) and never.attempts == APPEND_ATTEMPTS
    assert "restore change on msft-forecast was NOT recorded (OperationalError: database is locked)" in lost
    assert never.events("msft-forecast") == []


def test_an_emptied_or_replaced_ledger_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "monitoring" / "ledger.sqlite"
    SqliteLedger(path).append(traffic_event("msft-forecast", "deploy", {"blue": 100}, {"blue": V1}))
    path.write_bytes(b"")
    with pytest.raises(StateError) as refused:
        SqliteLedger(path)
    message = str(refused.value)
    assert f"{path} is empty" in message and "restore the file from a backup" in message
    assert "ledger.sqlite.created" in message and path.stat().st_size == 0
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    other = sqlite3.connect(path)  # replaced by another database
    other.execute("CREATE TABLE unrelated (x)")
    other.close()
    with pytest.raises(StateError, match="lacks the tables served"):
        SqliteLedger(path)
    path.unlink()
    with pytest.raises(StateError, match="is missing"):
        SqliteLedger(path)
    # The way out the message names: delete the marker, and a fresh ledger starts.
    (tmp_path / "monitoring" / "ledger.sqlite.created").unlink()
    assert SqliteLedger(path).events("msft-forecast") == []
