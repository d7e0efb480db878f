"""The monitor's batch scoring (`score_tickers`) against the real Azure ML inference server (`azmlinfsrv`,
127.0.0.1) serving a 2-ticker bundle: one request answers every ticker, a ticker the bundle does not hold
is answered with its error in place, and each answer names the ticker's own model and the bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from retrain.monitoring.monitor import score_tickers
from retrain.ports import PlatformError
from tests.bundle_models import closes_for, ridge_bundle
from tests.inference_server import start_inference_server

pytestmark = pytest.mark.slow

SCORE_PY = Path(__file__).resolve().parents[2] / "scorer" / "score.py"


def test_one_batch_request_scores_every_ticker_with_errors_in_place(tmp_path: Path) -> None:
    ridge_bundle(
        tmp_path / "fleet" / "3" / "bundle", tmp_path / "models", {"MSFT": 10, "IBM": 5}, version="3"
    )
    server = start_inference_server(SCORE_PY, tmp_path / "fleet" / "3", log_path=tmp_path / "server.log")
    sent: list[dict[str, Any]] = []

    def invoke(payload: dict[str, Any]) -> dict[str, Any]:
        sent.append(payload)
        answer = requests.post(server.scoring_url, json=payload, timeout=30)
        if answer.status_code != 200:
            raise PlatformError(f"{answer.status_code}: {answer.text}")
        return answer.json()

    try:
        closes = {t: closes_for(t)[-100:].tolist() for t in ("MSFT", "NVDA", "IBM")}
        answers = score_tickers(invoke, closes)
        single = invoke({"ticker": "IBM", "close": closes["IBM"][-64:]})
    finally:
        server.stop()
    assert len(sent) == 2 and [i["ticker"] for i in sent[0]["instances"]] == ["MSFT", "NVDA", "IBM"]
    assert all(len(i["close"]) == 64 for i in sent[0]["instances"])  # FORECAST_CLOSES each
    assert answers["MSFT"]["model"]["name"] == "forecast-msft" and answers["MSFT"]["model"]["version"] == "1"
    assert answers["MSFT"]["bundle"] == {"name": "fleet", "version": "3"}
    assert answers["NVDA"]["status"] == 404 and "NVDA" in answers["NVDA"]["error"]
    assert answers["IBM"]["forecast"] == single["forecast"]  # the batch scores as the single request does
