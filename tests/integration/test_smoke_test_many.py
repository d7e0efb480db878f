"""The rollout's batched smoke test (`activities.smoke_test_many`) against a real local bundle slot: ridge
models in the local MLflow registry, bundle 1 served by blue through azmlinfsrv and scorer/score.py, the
tests sent as `{"instances": [{"ticker", "close"}, ...]}` batches. Each ticker gets its own verdict: the
right model passes, a wrong version or a ticker the bundle does not hold fails alone, and a batch over
the latency bound is judged again one request per ticker."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from retrain import activities, adapters
from tests.bundle_models import closes_for
from tests.local_registry import register_ridge

pytestmark = pytest.mark.slow
ENDPOINT = "fleet-models"


def test_each_ticker_of_a_batch_gets_its_own_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RETRAIN_PLATFORM", "local")
    monkeypatch.setenv("RETRAIN_STATE_DIR", str(tmp_path / "state"))
    adapters.reset()
    platform = adapters.get_platform()
    try:
        models = {t: register_ridge(platform, t, 10, tmp_path / "fit") for t in ("MSFT", "AAPL")}
        platform.begin_create_endpoint(ENDPOINT)
        bundle = platform.register_bundle(ENDPOINT, "1", None, models, ["cycle-1"])
        platform.begin_deployment(ENDPOINT, "blue", bundle.as_model())
        deadline = time.monotonic() + 120
        while platform.get_deployment(ENDPOINT, "blue").state != "Succeeded":
            assert time.monotonic() < deadline, platform.get_deployment(ENDPOINT, "blue")
            time.sleep(0.2)

        def test(ticker: str, version: str) -> dict:
            closes = closes_for(ticker if ticker != "NVDA" else "MSFT")[-64:].tolist()
            return {"ticker": ticker, "closes": closes, "expect_versions": [version], "plausible": True}

        payload = {
            "endpoint": ENDPOINT,
            "slot": "blue",
            "max_latency_ms": 60_000,
            "max_instances": 2,  # three tests: two batch requests
            "tests": [test("MSFT", models["MSFT"].version), test("AAPL", "99"), test("NVDA", "1")],
        }
        verdicts = activities.smoke_test_many(payload)
        assert verdicts["MSFT"]["ok"], verdicts["MSFT"]
        assert verdicts["MSFT"]["model"]["version"] == models["MSFT"].version
        assert verdicts["MSFT"]["batch"] == 2
        assert not verdicts["AAPL"]["ok"] and "expected 99" in verdicts["AAPL"]["reason"]
        assert not verdicts["NVDA"]["ok"] and "404" in verdicts["NVDA"]["reason"]
        assert "not served" in verdicts["NVDA"]["reason"]

        # No request can answer within 0.001 ms: each batch is inconclusive, each ticker is scored alone
        # and fails on its own request's latency, with the bound's setting named.
        slow = activities.smoke_test_many({**payload, "max_latency_ms": 0.001, "tests": payload["tests"][:1]})
        assert not slow["MSFT"]["ok"] and "RETRAIN_SMOKE_MAX_LATENCY_MS" in slow["MSFT"]["reason"]
        assert "batch" not in slow["MSFT"]  # the verdict of its own request
    finally:
        platform.stop_all(everything=True)
        adapters.reset()
