"""The served ledger through the real local host: every traffic change of real orchestrations (in-memory
ML platform) is recorded, and `GET /api/served/{ticker}?at=` answers across a swap and a rollback."""

from __future__ import annotations

import datetime as dt
import time
import urllib.parse

from retrain import naming
from retrain.host_client import http_json
from retrain.monitoring.ledger import SqliteLedger
from tests.helpers import outcome, run_cycle


def served(host, ticker: str, at: dt.datetime | str | None = None, **extra: str) -> tuple[int, dict]:
    params = {"code": host.function_key, **extra}
    if at is not None:
        params["at"] = at if isinstance(at, str) else at.isoformat()
    return http_json("GET", f"{host.url}/api/served/{ticker}?{urllib.parse.urlencode(params)}")


def now() -> dt.datetime:
    time.sleep(0.01)  # strictly between two ledger entries
    return dt.datetime.now(dt.UTC)


def test_served_answers_across_a_swap_and_a_rollback(host, memory, tmp_path):
    before = now()
    assert outcome(run_cycle(host))["status"] == "deployed"  # v1 -> blue
    after_first = now()
    assert outcome(run_cycle(host))["status"] == "deployed"  # v2 -> green, blue retired
    after_swap = now()
    memory.script.broken_unpinned = True  # v3 on blue: the stable URL answers NaN in its canary: rolled back
    third = outcome(run_cycle(host))
    assert third["status"] == "failed" and "traffic is back on green" in third["error"], third
    after_rollback = now()

    def versions(at):
        code, answer = served(host, "msft", at)
        assert code == 200, answer
        return {s["model_version"]: s["weight"] for s in answer["serving"]}, answer

    assert versions(before)[0] == {}
    assert versions(after_first)[0] == {"1": 100}
    assert versions(after_swap)[0] == {"2": 100}
    latest, answer = versions(after_rollback)
    assert latest == {"2": 100} and answer["reason"] == "rollback" and answer["endpoint"] == "msft-forecast"
    assert versions(None)[0] == {"2": 100}  # no ?at=: now

    # Every traffic change is on record, in order, with the orchestration that made it.
    events = SqliteLedger(tmp_path / "monitoring" / "ledger.sqlite").events("msft-forecast")
    reasons = [e.reason for e in events]
    assert reasons[:2] == ["deploy", "promote"]  # the first model: no canary
    assert reasons[2:6] == ["deploy", "canary", "promote", "retire"]
    assert reasons[6] == "deploy" and reasons[-1] == "rollback"
    canary = events[3]
    assert {s.slot: (s.model_version, s.weight) for s in canary.slots} == {
        "blue": ("1", 90),
        "green": ("2", 10),
    }
    # Made by the endpoint's rollout, which passed the bundles: each ticker's model is on record.
    assert canary.instance_id and canary.instance_id.startswith(
        naming.rollout_instance_prefix("msft-forecast")
    )
    assert {s.slot: s.bundle for s in canary.slots} == {"blue": True, "green": True}
    # Between the canary's start and the promote, the answer is the split.
    code, answer = served(host, "MSFT", events[3].time)
    assert {s["model_version"]: s["weight"] for s in answer["serving"]} == {"1": 90, "2": 10}


def test_bad_requests_get_400_with_what_to_send(host):
    code, answer = served(host, "MSFT", "last week")
    assert code == 400 and "ISO 8601" in answer["error"]
    code, answer = served(host, "MS%20FT")
    assert code == 400 and "invalid ticker" in answer["error"]
    code, answer = served(host, "MSFT", when="now")
    assert code == 400 and "send only ?at=TIME" in answer["error"]
    code, _ = http_json("GET", f"{host.url}/api/served/MSFT")  # no function key
    assert code == 401


def test_times_the_ledger_cannot_order_get_400_not_a_wrong_answer_or_500(host):
    for at, says in (
        ("0999-06-01", "before 1970"),  # answered with today's model before
        ("9999-12-31T23:59:59-01:00", "past year 9999"),  # OverflowError, 500 before
        ("20261127", "not ISO 8601"),
    ):
        code, answer = served(host, "MSFT", at)
        assert code == 400 and says in answer["error"] and "send an ISO 8601 time" in answer["error"], answer


def test_a_corrupt_or_unopenable_ledger_is_a_503_that_names_the_file(host, tmp_path):
    ledger = tmp_path / "monitoring" / "ledger.sqlite"  # the host's state dir is tmp_path
    ledger.parent.mkdir(parents=True, exist_ok=True)
    ledger.write_bytes(b"this is not a database" * 100)
    code, answer = served(host, "MSFT")
    assert code == 503 and str(ledger) in answer["error"] and "is corrupt" in answer["error"], answer
    ledger.unlink()
    ledger.mkdir()  # what a read-only state dir does to SQLite, also when the tests run as root
    code, answer = served(host, "MSFT")
    assert code == 503 and str(ledger) in answer["error"] and "cannot be opened" in answer["error"], answer


def test_a_cycle_whose_ledger_records_are_lost_says_so_in_its_status(host, tmp_path):
    # The ledger's file cannot be opened (a directory stands where it should be): every append fails,
    # after its retries. The rollout goes on, and tells the cycle, whose status and output carry the loss.
    (tmp_path / "monitoring" / "ledger.sqlite").mkdir(parents=True)
    done = run_cycle(host)
    assert outcome(done)["status"] == "deployed"
    warnings = done["output"]["warnings"]
    assert [w[:300] for w in warnings] == done["warnings"]  # the readable status shows them too
    lost = [w for w in warnings if "was NOT recorded" in w]
    assert [w.split("the ", 1)[1].split(" change", 1)[0] for w in lost] == ["deploy", "traffic"], warnings
    assert all("msft-forecast" in w and "cannot be opened" in w for w in lost)


def test_an_emptied_ledger_is_refused_not_recreated(host, tmp_path):
    assert outcome(run_cycle(host))["status"] == "deployed"
    ledger = tmp_path / "monitoring" / "ledger.sqlite"
    assert SqliteLedger(ledger).events("msft-forecast")
    ledger.write_bytes(b"")  # emptied
    code, answer = served(host, "MSFT")
    assert code == 503, answer
    assert str(ledger) in answer["error"] and "is empty" in answer["error"]
    assert "restore the file from a backup" in answer["error"]
    assert ledger.stat().st_size == 0  # nothing was recreated over it
