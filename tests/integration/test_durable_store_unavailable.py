"""Issue 20 item 9, the durable store and the forecast log. A host/durable.sqlite that turns corrupt while
the host runs answers 503 naming the file and what to do, through the Durable HTTP API and the project's
routes that read it (POST /api/retrain, GET /api/retrain/{id}, the monitor's status, terminate, operator
traffic), never a raw 500 (`file is not a database`). A bad monitoring/monitor.sqlite refuses
POST /api/monitor with 503 instead of a 202 whose orchestration then fails."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from functions_host.host import LocalHost
from retrain.host_client import http_json, with_code


def _corrupt_durable_store(state_dir: Path) -> Path:
    db = state_dir / "host" / "durable.sqlite"
    for path in (db, db.with_name("durable.sqlite-wal")):  # the file and its WAL: garbage, in place
        size = max(path.stat().st_size, 1)
        with path.open("r+b") as file:
            file.write((b"this is not a database" * (size // 22 + 1))[:size])
    # The WAL index (-shm) is mapped by the host: its header is zeroed in place, so SQLite rebuilds the index
    # and reads the garbage instead of the pages it caches. Never shrunk, nor filled with garbage: either
    # can be a SIGBUS in the host's process, which is not the corrupt store this test is about.
    with db.with_name("durable.sqlite-shm").open("r+b") as file:
        file.write(bytes(136))
    return db


def test_a_corrupt_durable_store_answers_503_naming_the_file(host: LocalHost, tmp_path: Path) -> None:
    # No cycle runs: a writer racing the corruption could rebuild the WAL index and hide it for a while.
    db = _corrupt_durable_store(tmp_path)
    instance_id, monitor_id = "retrain-msft-20261124t231405z", "monitor-msft-20120702-213000"

    listing = with_code(f"{host.url}/runtime/webhooks/durabletask/instances", host.system_key)
    code, answer = http_json("GET", listing)
    assert code == 503, answer
    assert str(db) in answer["ExceptionMessage"] and "restore the file" in answer["ExceptionMessage"], answer

    status = with_code(f"{host.url}/api/retrain/{instance_id}", host.function_key)
    for method, url, body in [
        ("GET", status, None),
        ("POST", with_code(f"{host.url}/api/retrain", host.function_key), {"ticker": "AAPL"}),
        ("POST", with_code(f"{host.url}/api/retrain/{instance_id}/terminate", host.function_key), None),
        ("GET", with_code(f"{host.url}/api/monitor/{monitor_id}", host.function_key), None),
        ("POST", with_code(f"{host.url}/api/monitor/{monitor_id}/terminate", host.function_key), None),
        ("POST", with_code(f"{host.url}/api/endpoints/MSFT/rollback", host.function_key), None),
    ]:
        code, answer = http_json(method, url, body)
        assert code == 503, (method, url, code, answer)
        assert str(db) in answer["error"] and "restore the file" in answer["error"], answer


@pytest.mark.parametrize(
    ("spoil", "says"),
    [
        (lambda path: path.write_bytes(b"this is not a database" * 100), "is corrupt"),
        (
            lambda path: path.mkdir(parents=True),
            "cannot be opened",
        ),  # what a read-only state dir does, as root too
    ],
    ids=["corrupt", "unopenable"],
)
def test_a_bad_forecast_log_refuses_the_monitor_start_with_503(
    host: LocalHost, tmp_path: Path, spoil: Callable[[Path], object], says: str
) -> None:
    log = tmp_path / "monitoring" / "monitor.sqlite"
    log.parent.mkdir(parents=True, exist_ok=True)
    spoil(log)
    code, answer = http_json(
        "POST",
        with_code(f"{host.url}/api/monitor", host.function_key),
        {"ticker": "MSFT", "from": "2012-02-06"},
    )
    assert code == 503, answer
    assert str(log) in answer["error"] and says in answer["error"], answer
