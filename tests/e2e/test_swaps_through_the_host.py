"""Forced blue/green swaps in a row through the real local Functions host and the real local
platform (durable orchestration, ridge trainer subprocess, MLflow registry, Event Grid webhook,
azmlinfsrv slots, the endpoint's router), while a client scores through the stable URL every ~20 ms:
every cycle deploys, the serving slot alternates, and not one scoring request fails.

Two swaps after the first deployment (blue -> green -> blue): both directions of the swap, and the reuse
of a slot name that was deleted (blue, deleted once green took all traffic); more swaps repeat the same
transitions (the platform-level swap loop under keep-alive load is
tests/integration/test_local_endpoint.py)."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from functions_host.host import LocalHost
from retrain import adapters
from retrain.host_client import HostClient
from retrain.market_data import fetch_prices
from retrain.settings import declared_defaults

REPO = Path(__file__).resolve().parents[2]

SWAPS = 2
CYCLE_TIMEOUT_S = 600  # generous: a shared, busy machine
SCORE_EVERY_S = 0.02


def _cycle(host: LocalHost, body: dict[str, Any]) -> dict[str, Any]:
    """POST /api/retrain (a fleet of one) and follow the readable status until the orchestration ends;
    MSFT's outcome (status, model_version, slot, ...) with its endpoint's stable `scoring_uri`."""
    client = HostClient(host.url, host.function_key)
    code, answer = client.start_cycle(body)
    assert code == 202, answer
    status = client.follow_cycle(answer["id"], poll_s=0.3, timeout_s=CYCLE_TIMEOUT_S)
    assert status["runtime_status"] == "Completed", status
    out = status["output"]
    msft = out["tickers"]["MSFT"]
    return {**msft, "scoring_uri": out["endpoints"].get(msft["endpoint"])}


class Scorer(threading.Thread):
    """POSTs one scoring request to the stable URL every ~20 ms (a new connection each time, as a
    simple client does) and records every answer: slot, model version, or the failure."""

    def __init__(self, url: str, closes: list[float]) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.body = json.dumps({"close": closes}).encode()
        self.stop = threading.Event()
        self.sent = 0
        self.served: list[tuple[str | None, str]] = []  # (slot header, model version)
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            self.sent += 1
            request = urllib.request.Request(
                self.url, data=self.body, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = json.loads(response.read())
                    slot = response.headers.get("azureml-model-deployment")
                assert len(answer["forecast"]) == 1, answer
                self.served.append((slot, str(answer["model"]["version"])))
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                detail = exc.read()[:300] if isinstance(exc, urllib.error.HTTPError) else b""
                self.failures.append(f"{time.strftime('%H:%M:%S')} {type(exc).__name__}: {exc} {detail!r}")
            self.stop.wait(SCORE_EVERY_S)


def _recorded_pids(state_dir: Path) -> list[tuple[int, int | None]]:
    pids = []
    for state_file in state_dir.glob("endpoints/*/state.json"):
        state = json.loads(state_file.read_text())
        for info in [*([state["router"]] if "router" in state else []), *state.get("slots", {}).values()]:
            pids.append((info.get("pid"), info.get("start_ticks")))
    return pids


def test_forced_swaps_through_the_host_lose_no_scoring_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retrain.local.processes import process_alive, stop_process_group

    state_dir = tmp_path / "state"
    for key, value in {
        "RETRAIN_PLATFORM": "local",
        "RETRAIN_STATE_DIR": str(state_dir),
        "RETRAIN_SOURCE": "sample",
        "RETRAIN_TICKERS": "MSFT",
        "RETRAIN_TRAINER": "ridge",  # trains in seconds: the swaps are what is tested
        "RETRAIN_LOOKBACK_DAYS": "730",
        "RETRAIN_SMOKE_MAX_LATENCY_MS": "10000",  # a busy machine: the bound is not what is tested here
        "RETRAIN_JOB_POLL_MINUTES": "1",  # the Event Grid event wakes the cycle; the poll is a fallback
        "RETRAIN_KEEP_OLD_SLOT": "false",
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("RETRAIN_FUNCTION_KEY", "RETRAIN_SYSTEM_KEY", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)
    adapters.reset()
    host = LocalHost(
        REPO / "function_app.py",
        state_dir,
        port=0,
        timers=False,
        out=io.StringIO(),
        setting_defaults=declared_defaults(),
    )
    host.start()
    scorer: Scorer | None = None
    started = time.monotonic()
    try:
        first = _cycle(host, {"ticker": "MSFT"})
        assert first["status"] == "deployed" and first["slot"] == "blue", first
        closes = [float(c) for c in fetch_prices("MSFT", source="sample")["Close"].tail(64)]
        scorer = Scorer(first["scoring_uri"], closes)
        scorer.start()
        swaps_started = time.monotonic()
        slots, versions = [first["slot"]], [str(first["model_version"])]
        for _ in range(SWAPS):
            out = _cycle(host, {"ticker": "MSFT", "force": True})
            assert out["status"] == "deployed", out
            assert out["scoring_uri"] == first["scoring_uri"]  # the stable URL never changes
            slots.append(out["slot"])
            versions.append(str(out["model_version"]))
        # A few answers after the last swap, the latest from the last model (waited for, not slept for:
        # a loaded machine may answer nothing in half a second); the asserts below say what was missing.
        answered, last = len(scorer.served), (slots[-1], versions[-1])
        deadline = time.monotonic() + 60
        while not (len(scorer.served) >= answered + 3 and scorer.served[-1] == last) and scorer.is_alive():
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        scorer.stop.set()
        scorer.join(timeout=60)
        print(
            f"\nfirst cycle {swaps_started - started:.0f}s, {SWAPS} forced swaps "
            f"{time.monotonic() - swaps_started:.0f}s; scoring requests sent {scorer.sent}, "
            f"answered {len(scorer.served)}, failed {len(scorer.failures)}"
        )
        assert scorer.failures == [], f"{len(scorer.failures)} of {scorer.sent} failed: {scorer.failures[:5]}"
        assert slots == ["blue", "green"] * ((SWAPS + 1) // 2) + ["blue"] * ((SWAPS + 1) % 2), slots
        assert versions == [str(v) for v in range(1, SWAPS + 2)], versions
        # Every model after the first served requests from its slot; the last one serves at the end.
        for slot, version in zip(slots[1:], versions[1:], strict=True):
            assert (slot, version) in scorer.served, (slot, version)
        assert scorer.served[-1] == (slots[-1], versions[-1])
        endpoint = adapters.get_platform().get_endpoint(first["endpoint"])  # RETRAIN_ENDPOINTS' (shared)
        assert endpoint.traffic == {slots[-1]: 100}, endpoint.traffic  # the old slot deleted
    finally:
        if scorer is not None:
            scorer.stop.set()
            scorer.join(timeout=60)
        try:
            host.stop()
        finally:
            platform = adapters.get_platform()
            platform.stop_all(everything=True)  # every slot and router under this state dir, by PID
            adapters.reset()
            for pid, ticks in _recorded_pids(state_dir):  # nothing may outlive the test
                if process_alive(pid, ticks):
                    stop_process_group(pid, ticks)
    assert not any(process_alive(p, t) for p, t in _recorded_pids(state_dir))
