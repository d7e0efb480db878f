"""Bundles on the real local endpoint: bundle 1 (three tickers, ridge models in the local MLflow registry)
serves from blue, every ticker scores through the stable URL with `{"ticker", "close"}`; bundle 2 (one
ticker changed) goes to green, traffic moves, and the changed ticker answers with its new model while the
others keep theirs. Both bundles' folders stay intact and bundle 2 shares bundle 1's unchanged files.
(A single model still deploys through the unchanged path: tests/integration/test_local_endpoint.py.)"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from retrain.bundles import read_manifest
from retrain.local.platform import LocalPlatform
from tests.bundle_models import closes_for
from tests.local_registry import register_ridge

pytestmark = pytest.mark.slow
ENDPOINT = "fleet-models"
WINDOWS = {"MSFT": 10, "AAPL": 6, "BRK.B": 5}


def _wait(platform: LocalPlatform, what, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def _score(platform: LocalPlatform, ticker: str, slot: str | None = None) -> dict:
    return platform.invoke(ENDPOINT, {"ticker": ticker, "close": closes_for(ticker)[-20:].tolist()}, slot)


def _traffic(platform: LocalPlatform, table: dict[str, int]) -> None:
    platform.set_traffic(ENDPOINT, table)
    assert _wait(platform, lambda: platform.get_endpoint(ENDPOINT).state == "Succeeded")


def test_bundles_roll_out_blue_green_and_each_ticker_answers_with_its_model(tmp_path: Path):
    platform = LocalPlatform(tmp_path / "state")
    try:
        models = {t: register_ridge(platform, t, w, tmp_path / "fit") for t, w in WINDOWS.items()}
        platform.begin_create_endpoint(ENDPOINT)
        first = platform.register_bundle(ENDPOINT, "1", None, models, ["cycle-1"])
        platform.begin_deployment(ENDPOINT, "blue", first.as_model())
        # While blue starts (one operation at a time, as in Azure): AAPL retrained, bundle 2 with it.
        retrained = register_ridge(platform, "AAPL", 8, tmp_path / "fit")
        second = platform.register_bundle(ENDPOINT, "2", first, {"AAPL": retrained}, ["cycle-2"])
        assert _wait(platform, lambda: platform.get_deployment(ENDPOINT, "blue").state == "Succeeded")
        platform.begin_deployment(ENDPOINT, "green", second.as_model())
        assert _wait(platform, lambda: platform.get_deployment(ENDPOINT, "green").state == "Succeeded")
        _traffic(platform, {"blue": 100, "green": 0})

        state = platform.get_endpoint(ENDPOINT)
        assert state.deployments == {"blue": first.as_model().to_dict(), "green": second.as_model().to_dict()}
        assert state.deployments["blue"]["tags"] == {"bundle": "true"}
        assert platform.get_deployment(ENDPOINT, "blue").model == first.as_model().to_dict()
        before = {}
        for ticker, model in models.items():
            answer = _score(platform, ticker)
            assert answer["ticker"] == ticker
            assert (answer["model"]["name"], answer["model"]["version"]) == (model.name, model.version)
            assert answer["model"]["window"] == WINDOWS[ticker]
            assert answer["bundle"] == {"name": "fleet-models-bundle", "version": "1"}
            before[ticker] = answer["forecast"]

        assert _score(platform, "AAPL", slot="green")["model"]["version"] == retrained.version
        assert _score(platform, "AAPL")["model"]["version"] == models["AAPL"].version  # blue still serves
        _traffic(platform, {"blue": 0, "green": 100})

        changed = _score(platform, "AAPL")
        assert changed["bundle"] == {"name": "fleet-models-bundle", "version": "2"}
        assert (changed["model"]["version"], changed["model"]["window"]) == (retrained.version, 8)
        for ticker in ("MSFT", "BRK.B"):
            answer = _score(platform, ticker)
            assert answer["bundle"]["version"] == "2"
            assert answer["model"]["version"] == models[ticker].version
            assert answer["forecast"] == before[ticker]
        assert platform.get_endpoint(ENDPOINT).deployments["green"] == second.as_model().to_dict()

        root = platform.state_dir / "bundles" / "fleet-models-bundle"
        one, two = read_manifest(root / "1"), read_manifest(root / "2")  # both whole (each model checked)
        assert one.tickers["AAPL"].model_version == models["AAPL"].version
        assert two.tickers["AAPL"].model_version == retrained.version
        for ticker in ("MSFT", "BRK.B"):
            for file in (root / "1" / one.tickers[ticker].path).rglob("*"):
                if file.is_file():
                    twin = (
                        root
                        / "2"
                        / two.tickers[ticker].path
                        / file.relative_to(root / "1" / one.tickers[ticker].path)
                    )
                    assert os.path.samefile(file, twin) or file.read_bytes() == twin.read_bytes()
        # The slots serve the registered folders themselves (AZUREML_MODEL_DIR), not copies.
        slots = {s: Path(i["model_dir"]) for s, i in _slots(platform).items()}
        assert slots == {"blue": root / "1", "green": root / "2"}
    finally:
        platform.stop_all(everything=True)


def _slots(platform: LocalPlatform) -> dict:
    from retrain.local.processes import read_json

    return read_json(platform.state_dir / "endpoints" / ENDPOINT / "state.json")["slots"]
