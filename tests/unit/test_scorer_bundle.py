"""scorer/score.py serving a bundle in-process, on real ridge MLflow models: the same forecasts as the
single-model path (to 1e-9), batches answered per instance in order, 400/404 with guidance, the listing
on GET /score, and a bundle of one still taking today's requests."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from flask import Request
from werkzeug.test import EnvironBuilder

from retrain.bundles import BundleEntry, build_bundle, model_folder
from tests.bundle_models import closes_for, ridge_bundle

SCORE_PY = Path(__file__).resolve().parents[2] / "scorer" / "score.py"
WINDOWS = {"MSFT": 10, "BRK.B": 5, "^GSPC": 12}


def _load_score_module():
    spec = importlib.util.spec_from_file_location("scorer_score_under_test_bundle", SCORE_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


score = _load_score_module()


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-ticker bundle, laid out as Azure mounts a registered folder: <root>/<name>/<version>/<folder>."""
    root = tmp_path_factory.mktemp("azureml-models")
    ridge_bundle(root / "fleet" / "4" / "bundle", tmp_path_factory.mktemp("models"), WINDOWS, version="4")
    return root / "fleet" / "4"


@pytest.fixture(scope="module")
def bundle(bundle_dir: Path):
    return score.load_bundle(score.find_bundle_manifest(bundle_dir))


@pytest.fixture(scope="module")
def bundle_of_one(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path):
    out = tmp_path_factory.mktemp("one") / "b"
    model = bundle_dir / "bundle" / "models" / "msft"
    changes = {"MSFT": (model, BundleEntry("forecast-msft", "1", "ridge", "2026-12-04"))}
    build_bundle(out, None, changes, name="solo", version="1", endpoint="e", orchestration_ids=[])
    return score.load_bundle(out / "bundle.json")


def post(bundle, payload) -> dict:
    return score.score_bundle_body(bundle, json.dumps(payload).encode())


def history(ticker: str, n: int = 40) -> list[float]:
    return closes_for(ticker, 300)[-n:].tolist()


def request(method: str, body: bytes = b"") -> Request:
    environ = EnvironBuilder(method=method, path="/score", input_stream=io.BytesIO(body)).get_environ()
    environ["CONTENT_LENGTH"] = str(len(body))
    return Request(environ)


def test_init_finds_a_bundle_below_azures_nesting_and_loads_every_ticker(bundle_dir, monkeypatch):
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(bundle_dir))
    monkeypatch.setattr(score, "_bundle", None)
    monkeypatch.setattr(score, "_model", None)
    score.init()
    served = score._bundle
    assert served is not None and score._model is None
    assert served.identity == score.ModelIdentity("fleet", "4")
    assert {t: m.model.window for t, m in served.tickers.items()} == WINDOWS
    # The ridge model's own numpy path (checked against predict() at load): no DataFrame per request.
    assert all(m.model.fast_forecast.__name__ == "forecast_from_closes" for m in served.tickers.values())
    assert served.tickers["BRK.B"].model.identity == score.ModelIdentity("forecast-brk.b", "2")


def test_a_single_model_is_not_taken_for_a_bundle(bundle_dir):
    """A single model's folder (the old layout) has no bundle.json at any depth the search looks at."""
    assert score.find_bundle_manifest(bundle_dir / "bundle" / "models" / "msft") is None
    assert score.find_bundle_manifest(bundle_dir / "bundle" / "models") is None


def test_every_tickers_forecast_equals_the_single_model_paths(bundle, bundle_dir):
    """The same model served alone (today's path) and through the bundle answer the same, to 1e-9."""
    for ticker in WINDOWS:
        single = score.load(bundle_dir / "bundle" / "models" / model_folder(ticker), {})
        rows = [history(ticker, 30 + k) for k in range(5)]
        alone = score.score_body(single, json.dumps({"instances": rows}).encode())["forecast"]
        one_by_one = [post(bundle, {"ticker": ticker, "close": r})["forecast"][0] for r in rows]
        batch = post(bundle, {"instances": [{"ticker": ticker, "close": r} for r in rows]})["predictions"]
        np.testing.assert_allclose(one_by_one, alone, rtol=1e-9, atol=0)
        np.testing.assert_allclose([p["forecast"][0] for p in batch], alone, rtol=1e-9, atol=0)


def test_single_request_names_the_ticker_model_and_bundle(bundle):
    answer = post(bundle, {"ticker": "brk.b", "close": history("BRK.B")})
    assert answer["ticker"] == "BRK.B"
    assert answer["model"] == {"name": "forecast-brk.b", "version": "2", "window": 5}
    assert answer["bundle"] == {"name": "fleet", "version": "4"}
    assert len(answer["forecast"]) == 1 and answer["forecast"][0] > 0


def test_batch_answers_in_order_and_a_bad_instance_fails_alone(bundle):
    instances = [
        {"ticker": "MSFT", "close": history("MSFT")},
        {"ticker": "NVDA", "close": history("MSFT")},
        {"close": history("MSFT")},
        {"ticker": "^GSPC", "close": [1.0, 2.0]},
        "MSFT",
        {"ticker": "^GSPC", "close": history("^GSPC")},
        {"ticker": "MSFT", "close": history("MSFT", 11)},
    ]
    answer = post(bundle, {"instances": instances})
    predictions = answer["predictions"]
    assert answer["bundle"] == {"name": "fleet", "version": "4"} and len(predictions) == len(instances)
    assert [p.get("status") for p in predictions] == [None, 404, 400, 400, 400, None, None]
    assert [p["ticker"] for p in predictions] == ["MSFT", "NVDA", None, "^GSPC", None, "^GSPC", "MSFT"]
    assert "NVDA" in predictions[1]["error"] and "GET /score lists" in predictions[1]["error"]
    assert 'no "ticker"' in predictions[2]["error"] and "GET /score lists" in predictions[2]["error"]
    assert "needs at least 12" in predictions[3]["error"]
    assert predictions[5]["model"]["window"] == 12
    alone = [post(bundle, instances[i])["forecast"] for i in (0, 5, 6)]
    assert [predictions[i]["forecast"] for i in (0, 5, 6)] == alone


def test_missing_and_unknown_ticker_answer_400_and_404_saying_what_to_send(bundle):
    status, message = _answer(
        score.run_bundle(bundle, request("POST", json.dumps({"close": history("MSFT")}).encode()))
    )
    assert status == 400 and 'no "ticker"' in message
    assert '{"ticker": ' in message and "GET /score lists the 3 served ticker(s)" in message
    status, message = _answer(
        score.run_bundle(
            bundle, request("POST", json.dumps({"ticker": "NVDA", "close": [1.0] * 20}).encode())
        )
    )
    assert status == 404 and 'ticker "NVDA" is not served by bundle fleet version 4' in message
    assert "GET /score lists" in message
    bare = json.dumps({"instances": [history("MSFT")]}).encode()
    status, message = _answer(score.run_bundle(bundle, request("POST", bare)))
    assert status == 400 and "bare lists of closes" in message


def test_get_lists_the_served_tickers_and_other_methods_are_405(bundle):
    listing = score.run_bundle(bundle, request("GET"))
    assert listing["bundle"]["name"] == "fleet" and listing["bundle"]["version"] == "4"
    assert listing["tickers"]["^GSPC"] == {
        "name": "forecast-^gspc",
        "version": "3",
        "family": "ridge",
        "fitted_data_end": "2026-12-04",
        "window": 12,
    }
    assert sorted(listing["tickers"]) == sorted(WINDOWS)
    response = score.run_bundle(bundle, request("PUT"))
    assert response.status_code == 405
    # AMLResponse sends a comma-separated header value as repeated headers (valid for a list header).
    assert response.headers.getlist("Allow") == ["GET", "POST"]


def test_a_bundle_of_one_takes_todays_requests(bundle_of_one, bundle_dir):
    single = score.load(bundle_dir / "bundle" / "models" / "msft", {})
    rows = [history("MSFT"), history("MSFT", 12)]
    today = score.score_body(single, json.dumps({"instances": rows}).encode())
    answer = post(bundle_of_one, {"instances": rows})
    assert answer["forecast"] == today["forecast"] and answer["ticker"] == "MSFT"
    assert answer["bundle"] == {"name": "solo", "version": "1"}
    answer = post(bundle_of_one, {"close": rows[0]})
    assert answer["forecast"] == today["forecast"][:1] and answer["model"]["name"] == "forecast-msft"


def test_a_manifest_path_outside_the_bundle_fails_loading(tmp_path, bundle_dir):
    shutil.copytree(bundle_dir / "bundle", tmp_path / "b")
    shutil.copytree(bundle_dir / "bundle" / "models" / "msft", tmp_path / "outside")
    manifest = json.loads((tmp_path / "b" / "bundle.json").read_text())
    manifest["tickers"]["MSFT"]["path"] = "../outside"
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="must lead to a folder inside the bundle"):
        score.load_bundle(tmp_path / "b" / "bundle.json")


def test_a_bundle_of_another_format_fails_loading(tmp_path, bundle_dir):
    shutil.copytree(bundle_dir / "bundle", tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / "bundle.json").read_text())
    manifest["format"] = "retrain-bundle/2"
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="this scorer serves 'retrain-bundle/1'"):
        score.load_bundle(tmp_path / "b" / "bundle.json")


def _answer(response) -> tuple[int, str]:
    return response.status_code, json.loads(response.get_data())["message"]


FAILING_MODEL_CODE = """
import mlflow
import numpy as np
import pandas as pd


class FailsAboveAMillion(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        closes = np.asarray(model_input, dtype=float)
        if (closes > 1e6).any():
            raise ValueError("cannot forecast above a million")
        return pd.DataFrame({"forecast": closes[:, -1]})


mlflow.models.set_model(FailsAboveAMillion())
"""


def test_a_model_failing_on_its_rows_fails_only_those_instances(tmp_path, bundle_dir):
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    code = tmp_path / "failing.py"
    code.write_text(FAILING_MODEL_CODE)
    signature = ModelSignature(inputs=Schema([ColSpec("double", f"c{i}") for i in range(3)]))
    failing = tmp_path / "failing"
    mlflow.pyfunc.save_model(
        str(failing), python_model=str(code), signature=signature, metadata={"window": 3}
    )
    changes = {
        "MSFT": (bundle_dir / "bundle" / "models" / "msft", BundleEntry("forecast-msft", "1", "ridge")),
        "ODD": (failing, BundleEntry("forecast-odd", "1", "other")),
    }
    build_bundle(tmp_path / "b", None, changes, name="mixed", version="1", endpoint="e", orchestration_ids=[])
    mixed = score.load_bundle(tmp_path / "b" / "bundle.json")
    instances = [
        {"ticker": "ODD", "close": [1.0, 2.0, 2e6]},
        {"ticker": "MSFT", "close": history("MSFT")},
        {"ticker": "ODD", "close": [1.0, 2.0, 3.0]},
    ]
    predictions = post(mixed, {"instances": instances})["predictions"]
    # ODD's rows are forecast together, so both fail with it; MSFT's answer is unaffected.
    assert [p.get("status") for p in predictions] == [500, None, 500]
    assert predictions[1]["forecast"] == post(mixed, instances[1])["forecast"]
    assert post(mixed, instances[2])["forecast"] == [3.0]
    response = score.run_bundle(mixed, request("POST", json.dumps(instances[0]).encode()))
    assert response.status_code == 500


def test_a_model_folder_holding_a_bundle_json_file_is_still_a_single_model(tmp_path, bundle_dir):
    model = shutil.copytree(bundle_dir / "bundle" / "models" / "msft", tmp_path / "msft")
    (model / "bundle.json").write_text("{}")  # an artefact of that name inside a model is not a manifest
    assert score.find_bundle_manifest(tmp_path) is None
    assert score.find_bundle_manifest(model) is None


def test_a_bundle_checks_each_familys_requirements_once(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """MLflow compares a model's pinned requirements with the environment (warnings only) at load; a bundle
    does that for the first model of each family, not for every ticker (half of a small model's load)."""
    models = tmp_path / "models"
    ridge_bundle(tmp_path / "b", models, {"AAA": 10, "BBB": 10, "CCC": 10})
    for requirements in (tmp_path / "b" / "models").glob("*/requirements.txt"):
        requirements.write_text("mlflow==0.0.1\n", encoding="utf-8")  # a pin this environment cannot satisfy
    capfd.readouterr()
    loaded = score.load_bundle(tmp_path / "b" / "bundle.json")
    assert set(loaded.tickers) == {"AAA", "BBB", "CCC"}
    # MLflow's own logger writes the mismatch warning to stderr (it does not propagate to the root logger).
    assert capfd.readouterr().err.count("mlflow==0.0.1") == 1
