"""A monitored day whose scoring URL answers 503 with Retry-After (the slots are starting, as after
`retrain monitor` restores them) waits for it, within RETRAIN_MONITOR_SCORE_WAIT_S, and records the forecast;
past that budget the day has no forecast, with the reason. The scoring URL is a real HTTP server on
127.0.0.1 that the real local platform's endpoint client reaches (it serves the endpoint's kept port, as a
router of another process would); the forecast log and the MLflow registry are the state dir's own."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from retrain import adapters, naming
from retrain.adapters import get_forecast_log
from retrain.monitoring.monitor import monitor_day, score_with_wait
from retrain.ports import ScoringUnavailableError, TransientPlatformError, retry_after_seconds

THRESHOLDS = {"drift": 0.487, "cusum": 10.593, "cooldown_days": 20}
STARTING = "no deployment with traffic is live right now (starting or restarting); retry in 1s"


class StartingScoringUrl(ThreadingHTTPServer):
    """Answers the first `refusals` scoring requests 503 with `Retry-After: 1` (what the local router says
    while no slot with traffic is live), then forecasts; `answers` records each status sent."""

    daemon_threads = True

    def __init__(self, refusals: int, retry_after: str = "1") -> None:
        self.refusals = refusals
        self.retry_after = retry_after
        self.answers: list[int] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: StartingScoringUrl

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._send(200, {"live": {}})

    def do_POST(self) -> None:  # noqa: N802
        closes = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["close"]
        with self.server.lock:
            refuse = len(self.server.answers) < self.server.refusals
            self.server.answers.append(503 if refuse else 200)
        if refuse:
            self._send(
                503, {"error": f"endpoint ibm-forecast: {STARTING}"}, {"Retry-After": self.server.retry_after}
            )
        else:
            model = {"name": naming.model_name("IBM"), "version": "1"}
            self._send(200, {"forecast": [closes[-1] * 1.001], "model": model})


@pytest.fixture()
def scoring_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[StartingScoringUrl]:
    """The IBM endpoint of a local state dir whose kept scoring port is the server's."""
    server = StartingScoringUrl(refusals=2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state_dir = tmp_path / "state"
    endpoint_dir = state_dir / "endpoints" / naming.endpoint_name("IBM")
    endpoint_dir.mkdir(parents=True)
    (endpoint_dir / "state.json").write_text(
        json.dumps({"router_port": server.server_address[1], "slots": {}, "traffic": {}})
    )
    for key, value in {
        "RETRAIN_PLATFORM": "local",
        "RETRAIN_STATE_DIR": str(state_dir),
        "RETRAIN_SOURCE": "sample",
        "RETRAIN_ENDPOINTS": "per-ticker",  # IBM's own endpoint, where a ticker the ledger lacks is asked
    }.items():
        monkeypatch.setenv(key, value)
    adapters.reset()
    try:
        yield server
    finally:
        adapters.reset()
        server.shutdown()
        server.server_close()


def _day(as_of: str) -> dict[str, Any]:
    return monitor_day({"ticker": "IBM", "as_of": as_of, "source": "sample", "thresholds": THRESHOLDS})


def test_a_day_whose_slots_are_starting_waits_and_records_its_forecast(
    scoring_url: StartingScoringUrl, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETRAIN_MONITOR_SCORE_WAIT_S", "30")
    summary = _day("2012-01-03")
    assert scoring_url.answers == [503, 503, 200]
    assert [a for a in summary["alerts"] if a["kind"] == "no_forecast"] == []
    assert summary["forecast"] is not None and summary["forecast"]["model_version"] == "1"
    [row] = get_forecast_log().forecasts("IBM", until="2012-01-03")
    assert row["date"] == "2012-01-03" and row["forecast"] == summary["forecast"]["forecast"]


def test_past_the_budget_the_day_has_no_forecast_and_says_why(
    scoring_url: StartingScoringUrl, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETRAIN_MONITOR_SCORE_WAIT_S", "0")  # waiting switched off: the first 503 stands
    summary = _day("2012-01-03")
    assert scoring_url.answers == [503]
    [alert] = [a for a in summary["alerts"] if a["kind"] == "no_forecast"]
    assert "503" in alert["detail"] and "starting or restarting" in alert["detail"]
    assert "RETRAIN_MONITOR_SCORE_WAIT_S=0" in alert["detail"]
    assert summary["forecast"] is None and get_forecast_log().forecasts("IBM", until="2012-01-03") == []


def test_the_wait_is_bounded_by_the_budget_and_follows_retry_after() -> None:
    clock = [0.0]
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        clock[0] += seconds

    def refused() -> dict[str, Any]:
        raise ScoringUnavailableError("503 starting", 4.0)

    with pytest.raises(ScoringUnavailableError, match="after waiting 10s of RETRAIN_MONITOR_SCORE_WAIT_S=10"):
        score_with_wait(refused, 10.0, sleep=sleep, clock=lambda: clock[0])
    assert pauses == [4.0, 4.0, 2.0]  # the last pause is cut to what the budget leaves

    def down() -> dict[str, Any]:  # a failure without Retry-After is not waited for
        raise TransientPlatformError("502")

    pauses.clear()
    with pytest.raises(TransientPlatformError, match="502"):
        score_with_wait(down, 10.0, sleep=sleep, clock=lambda: clock[0])
    assert pauses == []


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds(" 0 ") == 0.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: no wait
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
