"""One endpoint slot as the local endpoint starts it (retrain.local.inference_server, the slot settings
of retrain/scoring_server.py): the settings reach the server, a keep-alive client keeps its connection
across requests (good and bad ones), and the worker survives."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path

import pandas as pd
import pytest

from retrain.local.inference_server import (
    LOCAL_HOST,
    start_inference_server,
    stop_inference_server,
    wait_until_live,
)
from retrain.local.processes import free_port
from retrain.scoring_server import SLOT_SERVER_ENVIRONMENT

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCORE_PY = REPO / "scorer" / "score.py"


@pytest.fixture(scope="module")
def slot(trained_model: Path, tmp_path_factory: pytest.TempPathFactory):
    log_path = tmp_path_factory.mktemp("slot") / "server.log"
    server = start_inference_server(SCORE_PY, trained_model / "model", free_port(), log_path)
    try:
        wait_until_live(server)
        yield server
    finally:
        stop_inference_server(server.pid, server.start_ticks)


@pytest.fixture(scope="module")
def good_body(sample_csv: Path) -> bytes:
    return json.dumps({"close": pd.read_csv(sample_csv)["Close"].tail(60).tolist()}).encode()


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def test_the_slot_runs_with_the_slot_settings(slot):
    environ = environ_of(slot.pid)
    assert {k: environ.get(k) for k in SLOT_SERVER_ENVIRONMENT} == SLOT_SERVER_ENVIRONMENT
    log = Path(slot.log_path).read_text(errors="replace")
    assert "Using worker: gthread" in log


def test_a_keep_alive_client_keeps_one_connection_across_good_and_bad_requests(slot, good_body):
    conn = http.client.HTTPConnection(LOCAL_HOST, slot.port, timeout=30)
    try:
        answers = []
        local_ports = set()
        for body in (good_body, b'{"close": [1, 2]}', b"not json", good_body):
            conn.request("POST", "/score", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = json.loads(response.read())
            local_ports.add(conn.sock.getsockname()[1])
            # The sync worker would answer `Connection: close` and hang up after every response.
            assert not response.will_close, response.getheaders()
            answers.append((response.status, payload))
        assert [status for status, _ in answers] == [200, 400, 400, 200]
        assert "Send a JSON object" in answers[1][1]["message"]
        assert answers[0][1] == answers[3][1]
        assert len(local_ports) == 1  # one TCP connection carried all four requests
    finally:
        conn.close()
    log = Path(slot.log_path).read_text(errors="replace")
    assert log.count("Booting worker with pid") == int(SLOT_SERVER_ENVIRONMENT["WORKER_COUNT"])


def test_each_scoring_request_is_logged_once_and_answered_as_json(slot, good_body):
    # scorer/logging.json (azmlinfsrv's own logging config, read from the code folder in Azure too) keeps
    # the server's per-request line and drops gunicorn's access line, which repeated it; a scored
    # document is answered by the server as JSON without its "run() output is HTTP Response" line.
    log_path = Path(slot.log_path)
    before = len(log_path.read_text(errors="replace"))
    conn = http.client.HTTPConnection(LOCAL_HOST, slot.port, timeout=30)
    try:
        for _ in range(5):
            conn.request("POST", "/score", body=good_body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = json.loads(response.read())
            assert response.status == 200 and response.getheader("Content-Type") == "application/json"
            assert set(payload) == {"forecast", "model"} and len(payload["forecast"]) == 1
    finally:
        conn.close()
    deadline = time.monotonic() + 10
    while True:  # the worker writes its log lines after the answers
        new = log_path.read_text(errors="replace")[before:]
        if new.count("POST /score 200") >= 5 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert new.count("POST /score 200") == 5, new
    assert 'HTTP/1.1" 200' not in new and "run() output is HTTP Response" not in new, new
