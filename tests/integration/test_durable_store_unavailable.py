"""Issue 20 item 9, the durable store: a host/durable.sqlite that turns corrupt while the host runs answers
503 naming the file and what to do, through the Durable HTTP API and through the project's routes that read
it (POST /api/retrain, GET /api/retrain/{id}, terminate), never a raw 500 (`file is not a database`)."""

from __future__ import annotations

from pathlib import Path

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
