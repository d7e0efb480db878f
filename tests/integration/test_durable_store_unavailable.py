"""Issue 20 item 9, the durable store and the forecast log: a host/durable.sqlite that turns corrupt while the host runs answers
503 naming the file and what to do, through the Durable HTTP API and through the project's routes that read
it (POST /api/retrain, GET /api/retrain/{id}, terminate), never a raw 500 (`file is not a database`). A bad
monitoring/monitor.sqlite refuses POST /api/monitor with 503 instead of a 202 whose orchestration fails."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from functions_host.host import LocalHost
from retrain.host_client import http_json, with_code
from tests.helpers import start


def _corrupt_durable_store(state_dir: Path) -> Path:
    db = state_dir / "host" / "durable.sqlite"
    for path in [db, *db.parent.glob("durable.sqlite-*")]:  # the file, its WAL and shared memory
        path.write_bytes(b"this is not a database" * 1000)
    return db


def test_a_corrupt_durable_store_answers_503_naming_the_file(host: LocalHost, tmp_path: Path) -> None:
    code, started = start(host, {"ticker": "MSFT"})
    assert code == 202, started
    db = _corrupt_durable_store(tmp_path)

    listing = with_code(f"{host.url}/runtime/webhooks/durabletask/instances", host.system_key)
    code, answer = http_json("GET", listing)
    assert code == 503, answer
    assert str(db) in answer["ExceptionMessage"] and "restore the file" in answer["ExceptionMessage"], answer

    status = with_code(f"{host.url}/api/retrain/{started['id']}", host.function_key)
    for method, url, body in [
        ("GET", status, None),
        ("POST", with_code(f"{host.url}/api/retrain", host.function_key), {"ticker": "AAPL"}),
        ("POST", with_code(f"{host.url}/api/retrain/{started['id']}/terminate", host.function_key), None),
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
