"""The endpoint router's pure parts: weighted slot choice, the routing decisions (live slots only,
Azure's 404 without traffic) and traffic/name validation."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from retrain.local.endpoint import (
    NO_VALID_DEPLOYMENTS,
    RoutingTable,
    ScoringRouter,
    WeightedPicker,
    validate_endpoint_name,
    validate_slot,
    validate_traffic,
)
from retrain.local.processes import write_json_atomic
from retrain.ports import PlatformError


@pytest.mark.parametrize(
    "weights", [{"blue": 90, "green": 10}, {"blue": 50, "green": 50}, {"blue": 1, "green": 99}]
)
def test_every_hundred_picks_match_the_weights_exactly(weights: dict[str, int]) -> None:
    picker = WeightedPicker(weights)
    for _ in range(3):
        assert Counter(picker.pick() for _ in range(100)) == Counter({s: w for s, w in weights.items() if w})


def test_picks_are_interleaved_not_bursts() -> None:
    picker = WeightedPicker({"blue": 50, "green": 50})
    picks = [picker.pick() for _ in range(10)]
    assert all(a != b for a, b in zip(picks, picks[1:], strict=False))
    picker = WeightedPicker({"blue": 90, "green": 10})
    greens = [i for i, s in enumerate(picker.pick() for _ in range(100)) if s == "green"]
    assert len(greens) == 10 and min(b - a for a, b in zip(greens, greens[1:], strict=False)) >= 9


def test_zero_weight_slot_is_never_picked_and_no_traffic_picks_nothing() -> None:
    picker = WeightedPicker({"blue": 0, "green": 100})
    assert {picker.pick() for _ in range(50)} == {"green"}
    assert WeightedPicker({}).pick() is None
    assert WeightedPicker({"blue": 0}).pick() is None


def test_picker_is_exact_under_concurrent_use() -> None:
    picker = WeightedPicker({"blue": 90, "green": 10})
    picks: list[str | None] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = [picker.pick() for _ in range(250)]
        with lock:
            picks.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(picks) == Counter({"blue": 900, "green": 100})


def test_valid_traffic_is_completed_with_every_deployed_slot() -> None:
    assert validate_traffic({"blue": 100}, {"blue", "green"}) == {"blue": 100, "green": 0}
    assert validate_traffic({"blue": 90, "green": 10}, {"blue", "green"}) == {"blue": 90, "green": 10}
    # A slot that is not deployed may be named with 0 %.
    assert validate_traffic({"blue": 100, "green": 0}, {"blue"}) == {"blue": 100, "green": 0}
    # All 0 %: no slot serves (a first model rolled back); Azure takes it and answers unpinned requests 404.
    assert validate_traffic({"blue": 0}, {"blue", "green"}) == {"blue": 0, "green": 0}
    assert validate_traffic({"blue": 0, "green": 0}, {"blue", "green"}) == {"blue": 0, "green": 0}


@pytest.mark.parametrize(
    ("traffic", "message"),
    [
        ({"blue": 90, "green": 20}, "sum to 100"),
        ({"blue": 50}, "sum to 100"),
        ({"red": 100}, "unknown slot"),
        ({"blue": 100.0}, "integer"),
        ({"blue": True}, "integer"),
        ({"blue": 150, "green": -50}, "integer 0..100"),
        ({}, "non-empty"),
    ],
)
def test_invalid_traffic_is_rejected_with_the_reason(traffic: dict, message: str) -> None:
    with pytest.raises(PlatformError, match=message):
        validate_traffic(traffic, {"blue", "green"})


def test_traffic_to_a_slot_without_deployment_is_rejected() -> None:
    with pytest.raises(PlatformError, match="no deployment"):
        validate_traffic({"blue": 0, "green": 100}, {"blue"})


@pytest.mark.parametrize("name", ["msft-forecast", "abc", "A1-b2"])
def test_endpoint_names_azure_accepts(name: str) -> None:
    assert validate_endpoint_name(name) == name


@pytest.mark.parametrize("name", ["ab", "1abc", "abc-", "has_underscore", "x" * 33, "../etc"])
def test_endpoint_names_azure_rejects(name: str) -> None:
    with pytest.raises(PlatformError, match="3-32 letters"):
        validate_endpoint_name(name)


def test_unknown_slot_is_rejected() -> None:
    assert validate_slot("green") == "green"
    with pytest.raises(PlatformError, match="slots are blue, green"):
        validate_slot("red")


def _router(tmp_path: Path, traffic: dict[str, int], slots: dict[str, dict]) -> ScoringRouter:
    state_file = tmp_path / "state.json"
    write_json_atomic(state_file, {"revision": 3, "router_port": 1, "traffic": traffic, "slots": slots})
    router = ScoringRouter("msft-forecast", state_file, port=1)  # never started: the routing decisions only
    router.reload(force=True)
    return router


def test_the_routing_table_leaves_out_slots_being_deleted_and_slots_without_traffic() -> None:
    table = RoutingTable.from_state(
        {
            "revision": 7,
            "traffic": {"blue": 0, "green": 100},
            "slots": {"blue": {"port": 1}, "green": {"port": 2}},
        }
    )
    assert table.weights == {"green": 100} and table.ports == {"blue": 1, "green": 2} and table.revision == 7
    deleting = RoutingTable.from_state(
        {
            "traffic": {"blue": 0, "green": 100},
            "slots": {"blue": {"port": 1, "deleting": True}, "green": {"port": 2}},
        }
    )
    assert deleting.ports == {"green": 2}


def test_no_traffic_anywhere_is_azures_404_but_a_pinned_live_slot_is_served(tmp_path: Path) -> None:
    router = _router(tmp_path, {"blue": 0}, {"blue": {"port": 5001}})
    router._set_live("blue", 5001, True)
    assert router.choose(None, "POST", set()) == (404, {"error": NO_VALID_DEPLOYMENTS})
    assert router.choose("blue", "POST", set()) == ("blue", 5001)
    assert router.inflight("blue") == 1
    router.done("blue")
    assert router.inflight("blue") == 0


def test_a_slot_that_is_not_live_is_never_chosen(tmp_path: Path) -> None:
    router = _router(tmp_path, {"blue": 50, "green": 50}, {"blue": {"port": 5001}, "green": {"port": 5002}})
    status, body = router.choose(None, "POST", set())  # nothing probed live yet: retry later
    assert status == 503 and "retry" in body["error"]
    router._set_live("green", 5002, True)
    picks = [router.choose(None, "POST", set()) for _ in range(20)]
    assert set(picks) == {("green", 5002)}  # blue is down: all of its share goes to green
    router._set_live("blue", 5001, True)
    assert {router.choose(None, "POST", set())[0] for _ in range(20)} == {"blue", "green"}
    assert router.choose(None, "POST", {"blue"}) == ("green", 5002)  # blue just failed this request
    status, _ = router.choose("blue", "POST", {"blue"})
    assert status == 503  # pinned to a slot that just failed: say when to retry, never forward blindly


def test_a_starting_slot_is_not_reported_down_only_a_live_slot_that_stops_answering(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    router = _router(tmp_path, {"blue": 100}, {"blue": {"port": 5001}})
    caplog.set_level(logging.INFO, logger="retrain.local.endpoint")
    router._set_live("blue", 5001, False)  # the first probes of a slot that is still starting
    router._set_live("blue", 5001, True)
    router._set_live("blue", 5001, False)
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert said == [
        (logging.INFO, "endpoint msft-forecast: slot blue is not answering yet"),
        (logging.INFO, "endpoint msft-forecast: slot blue is live"),
        (logging.WARNING, "endpoint msft-forecast: slot blue is down"),
    ]


class _Slot(BaseHTTPRequestHandler):
    """A slot's inference server on 127.0.0.1: live (GET / is 200) and answering POST /score, or, on the
    `dies` server, dying in the middle of its answer (headers sent, then the connection closes)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._answer(b"ok")

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.dies:  # type: ignore[attr-defined]
            self.send_response(200)
            self.send_header("Content-Length", "102")
            self.end_headers()  # ... and no body: the process is killed here
            self.close_connection = True
            return
        self._answer(json.dumps({"forecast": [1.5]}).encode())

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _slot_server(dies: bool) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slot)
    server.dies = dies  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_slot_dying_mid_answer_is_retried_on_the_other_slot_not_dropped(tmp_path: Path) -> None:
    dying, healthy = _slot_server(dies=True), _slot_server(dies=False)
    state_file = tmp_path / "state.json"
    slots = {"blue": {"port": dying.server_address[1]}, "green": {"port": healthy.server_address[1]}}
    write_json_atomic(
        state_file, {"revision": 1, "router_port": 0, "traffic": {"blue": 50, "green": 50}, "slots": slots}
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    router = ScoringRouter("msft-forecast", state_file, port)
    router.start()
    try:
        deadline = time.monotonic() + 30
        while not (router.is_live("blue") and router.is_live("green")):
            assert time.monotonic() < deadline, router.status()
            time.sleep(0.05)
        answers = []
        for _ in range(6):  # half of them go to blue first; blue's answer breaks off every time
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/score", data=b'{"close": [1.0]}', method="POST"
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                answers.append((response.status, response.headers["azureml-model-deployment"]))
        assert answers == [(200, "green")] * 6
    finally:
        router.stop()
        dying.shutdown()
        healthy.shutdown()
