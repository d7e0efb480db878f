"""The real Azure ML inference server (`azmlinfsrv`, 127.0.0.1) serving a 3-ticker bundle laid out as
Azure mounts a registered folder (`<name>/<version>/<folder>/bundle.json`): one process, every ticker."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.bundle_models import closes_for, ridge_bundle
from tests.inference_server import start_inference_server

pytestmark = pytest.mark.slow

SCORE_PY = Path(__file__).resolve().parents[2] / "scorer" / "score.py"
WINDOWS = {"MSFT": 10, "BRK.B": 5, "EURUSD=X": 12}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("azureml-models")
    ridge_bundle(root / "fleet" / "2" / "bundle", tmp_path_factory.mktemp("models"), WINDOWS, version="2")
    srv = start_inference_server(SCORE_PY, root / "fleet" / "2", log_path=root / "server.log")
    try:
        yield srv
    finally:
        srv.stop()


def history(ticker: str) -> list[float]:
    return closes_for(ticker)[-30:].tolist()


def test_one_server_scores_every_ticker_and_lists_them(server):
    listing = requests.get(server.scoring_url, timeout=30)
    assert listing.status_code == 200, listing.text
    assert listing.json()["bundle"]["version"] == "2"
    assert {t: v["window"] for t, v in listing.json()["tickers"].items()} == WINDOWS

    single = requests.post(
        server.scoring_url, json={"ticker": "EURUSD=X", "close": history("EURUSD=X")}, timeout=30
    )
    assert single.status_code == 200, single.text
    answer = single.json()
    assert answer["ticker"] == "EURUSD=X" and answer["bundle"] == {"name": "fleet", "version": "2"}
    assert answer["model"] == {"name": "forecast-eurusd=x", "version": "3", "window": 12}

    instances = [{"ticker": t, "close": history(t)} for t in WINDOWS]
    instances.insert(1, {"ticker": "NVDA", "close": history("MSFT")})
    batch = requests.post(server.scoring_url, json={"instances": instances}, timeout=30)
    assert batch.status_code == 200, batch.text
    predictions = batch.json()["predictions"]
    assert [p["ticker"] for p in predictions] == ["MSFT", "NVDA", "BRK.B", "EURUSD=X"]
    assert predictions[1]["status"] == 404 and "NVDA" in predictions[1]["error"]
    assert predictions[3]["forecast"] == answer["forecast"]

    missing = requests.post(server.scoring_url, json={"close": history("MSFT")}, timeout=30)
    assert missing.status_code == 400 and "GET /score lists" in missing.json()["message"]
    unknown = requests.post(server.scoring_url, json={"ticker": "NVDA", "close": history("MSFT")}, timeout=30)
    assert unknown.status_code == 404 and "NVDA" in unknown.json()["message"]
    other = requests.delete(server.scoring_url, timeout=30)
    assert other.status_code == 405
