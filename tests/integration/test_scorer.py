"""The scorer on the real Azure ML inference server (`azmlinfsrv`, 127.0.0.1), serving the model that
trainer/train.py produced, laid out as Azure mounts it (`<name>/<version>/model/`)."""

import importlib.util
import json
import math
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from tests.inference_server import (
    InferenceServer,
    InferenceServerError,
    is_live,
    lay_out_like_azure,
    start_inference_server,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCORE_PY = REPO / "scorer" / "score.py"
MODEL_NAME, MODEL_VERSION = "msft-forecaster", "7"
GUIDANCE = "Send a JSON object"


@pytest.fixture(scope="module")
def model_dir(trained_model: Path) -> Path:
    return trained_model / "model"


@pytest.fixture(scope="module")
def local_model(model_dir: Path):
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(model_dir))


@pytest.fixture(scope="module")
def window(local_model) -> int:
    return int(local_model.metadata.metadata["window"])


@pytest.fixture(scope="module")
def closes(sample_csv: Path) -> list[float]:
    """Real closes from the bundled sample (oldest first)."""
    return pd.read_csv(sample_csv)["Close"].astype(float).tolist()


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("azureml-models")
    azureml_model_dir = lay_out_like_azure(model_dir, root, MODEL_NAME, MODEL_VERSION)
    srv = start_inference_server(SCORE_PY, azureml_model_dir, log_path=root / "server.log")
    try:
        yield srv
    finally:
        srv.stop()


def in_process_forecast(local_model, rows: list[list[float]], window: int) -> list[float]:
    frame = pd.DataFrame(rows, columns=[f"c{i}" for i in range(window)], dtype="float64")
    return local_model.predict(frame)["forecast"].astype(float).tolist()


def post(srv: InferenceServer, body: bytes | str, **kwargs) -> requests.Response:
    return requests.post(srv.scoring_url, data=body, timeout=30, **kwargs)


def test_liveness_probe(server):
    response = requests.get(f"{server.base_url}/", timeout=10)
    assert response.status_code == 200


def test_server_listens_on_loopback_only(server):
    assert f"Listening at: http://127.0.0.1:{server.port}" in server.log_tail(100_000)


def test_close_payload_scores_like_the_model_in_process(server, local_model, window, closes):
    history = closes[-(window + 30) :]  # more than the window: the scorer uses the last `window`
    response = requests.post(server.scoring_url, json={"close": history}, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == {"name": MODEL_NAME, "version": MODEL_VERSION, "window": window}
    (forecast,) = answer["forecast"]
    assert math.isfinite(forecast) and forecast > 0
    expected = in_process_forecast(local_model, [history[-window:]], window)
    np.testing.assert_allclose(answer["forecast"], expected, rtol=1e-9)
    # A next-day close stays in the neighbourhood of today's close.
    assert 0.5 * history[-1] < forecast < 2.0 * history[-1]


def test_instances_payload_scores_each_row(server, local_model, window, closes):
    instances = [closes[-window:], closes[-(window + 7) : -7], closes[-(window + 250) : -200]]
    response = requests.post(server.scoring_url, json={"instances": instances}, timeout=30)
    assert response.status_code == 200, response.text
    forecast = response.json()["forecast"]
    assert len(forecast) == 3
    assert all(math.isfinite(v) and v > 0 for v in forecast)
    expected = in_process_forecast(local_model, [row[-window:] for row in instances], window)
    np.testing.assert_allclose(forecast, expected, rtol=1e-9)
    assert len(set(forecast)) == 3  # different histories, different forecasts


def bad_bodies(window: int, good: list[float]) -> list[tuple[str, bytes, str]]:
    """(case, raw body, what the message must name)."""
    ok = json.dumps(good)
    return [
        ("not JSON", b"close=1,2,3", "not valid JSON"),
        ("empty body", b"", "empty"),
        ("not UTF-8", b"\xff\xfe\x00", "not UTF-8"),
        ("not an object", ok.encode(), "must be an object"),
        ("wrong key", f'{{"prices": {ok}}}'.encode(), "unexpected key(s) 'prices'"),
        ("extra key", f'{{"close": {ok}, "window": 3}}'.encode(), "unexpected key(s) 'window'"),
        ("both keys", f'{{"close": {ok}, "instances": [{ok}]}}'.encode(), "not both"),
        ("duplicate key", f'{{"close": {ok}, "close": {ok}}}'.encode(), "duplicate key"),
        (
            "too short",
            json.dumps({"close": good[: window - 1]}).encode(),
            f"the model needs at least {window}",
        ),
        ("NaN", f'{{"close": {ok[:-1]}, NaN]}}'.encode(), "NaN is not allowed"),
        ("Infinity", f'{{"close": {ok[:-1]}, Infinity]}}'.encode(), "Infinity is not allowed"),
        ("overflowing number", f'{{"close": {ok[:-1]}, 1e999]}}'.encode(), "is not finite"),
        ("string number", json.dumps({"close": [*good[:-1], "101.5"]}).encode(), "is a string"),
        ("boolean", json.dumps({"close": [*good[:-1], True]}).encode(), "is a boolean"),
        ("null", json.dumps({"close": [*good[:-1], None]}).encode(), "is null"),
        ("negative price", json.dumps({"close": [*good[:-1], -1.0]}).encode(), "positive price"),
        ("instances not nested", json.dumps({"instances": good}).encode(), "must be a list of numbers"),
        (
            "instance too short",
            json.dumps({"instances": [good, good[:2]]}).encode(),
            '"instances"[1] has 2 values',
        ),
        ("too many instances", json.dumps({"instances": [good] * 1001}).encode(), "at most 1000 per request"),
        ("deeply nested", b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
        ("huge body", b'{"close": [' + b"101.25, " * 300_000 + b"101.25]}", "at most 1048576"),
    ]


def test_every_kind_of_bad_input_answers_400_saying_what_to_send(server, window, closes):
    good = closes[-window:]
    failures = []
    for case, body, names in bad_bodies(window, good):
        response = post(server, body, headers={"Content-Type": "application/json"})
        message = (
            response.json().get("message", "")
            if response.headers.get("Content-Type") == "application/json"
            else ""
        )
        if response.status_code != 400 or names not in message or GUIDANCE not in message:
            failures.append((case, response.status_code, response.text[:300]))
    assert not failures, failures


def test_huge_chunked_body_without_length_answers_400(server):
    def chunks():
        yield b'{"close": ['
        for _ in range(40):
            yield b"101.25, " * 8192
        yield b"101.25]}"

    response = post(server, chunks())  # a generator body is sent chunked, without Content-Length
    assert response.status_code == 400, response.text
    assert "larger than 1048576 bytes" in response.json()["message"]


def test_get_on_score_says_to_post(server):
    response = requests.get(server.scoring_url, timeout=10)
    assert response.status_code == 405
    assert "Use POST /score" in response.json()["message"]


def test_worker_survives_bad_input(server, local_model, window, closes):
    for _, body, _ in bad_bodies(window, closes[-window:]):
        assert post(server, body).status_code == 400
    response = requests.post(server.scoring_url, json={"close": closes[-window:]}, timeout=30)
    assert response.status_code == 200
    np.testing.assert_allclose(
        response.json()["forecast"], in_process_forecast(local_model, [closes[-window:]], window), rtol=1e-9
    )
    # gunicorn logs every worker (re)boot: one boot means no worker died along the way.
    log = server.log_tail(10_000_000)
    assert log.count("Booting worker with pid") == 1, log[-3000:]
    assert is_live(server.base_url)


def test_flat_model_folder_loads_in_process_with_identity_from_environment(model_dir, window):
    score = _load_score_module()
    env = {"RETRAIN_MODEL_NAME": "msft-forecaster", "RETRAIN_MODEL_VERSION": "3"}
    loaded = score.load(model_dir, env)
    assert (loaded.identity.name, loaded.identity.version, loaded.window) == ("msft-forecaster", "3", window)
    assert score.load(model_dir, {}).identity.name == "unknown"


BROKEN_MODEL_CODE = textwrap.dedent(
    """
    import mlflow


    class Broken(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            raise RuntimeError("internal detail the client must not see")


    mlflow.models.set_model(Broken())
    """
)


def test_internal_error_answers_500_generic_and_the_worker_lives_on(tmp_path):
    """A model that fails at predict time (a real pyfunc model, saved and served): the client gets a
    generic 500, the traceback goes to the log, and the same worker keeps serving."""
    import mlflow.pyfunc

    code = tmp_path / "broken_model.py"
    code.write_text(BROKEN_MODEL_CODE)
    version_dir = tmp_path / "broken" / "1"
    mlflow.pyfunc.save_model(str(version_dir / "model"), python_model=str(code), metadata={"window": 3})

    srv = start_inference_server(SCORE_PY, version_dir, log_path=tmp_path / "server.log")
    try:
        for _ in range(2):
            response = requests.post(srv.scoring_url, json={"close": [1.0, 2.0, 3.0]}, timeout=30)
            assert response.status_code == 500
            assert "internal detail" not in response.text
            assert "Internal error while scoring" in response.json()["message"]
        assert requests.post(srv.scoring_url, json={"close": [1.0]}, timeout=30).status_code == 400
        log = srv.log_tail(1_000_000)
        assert "internal detail the client must not see" in log  # logged for the operator
        assert log.count("Booting worker with pid") == 1
    finally:
        code_after_stop = srv.stop()

    # Stopped by PID: the process and its whole group are gone and the port no longer answers.
    assert code_after_stop is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(srv.pid, 0)
    assert not is_live(srv.base_url, timeout=1)


def _load_score_module():
    spec = importlib.util.spec_from_file_location("scorer_score_integration", SCORE_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_model_folder_without_mlflow_model_keeps_the_server_down(tmp_path):
    empty_version_dir = tmp_path / "msft-forecaster" / "2"
    (empty_version_dir / "model").mkdir(parents=True)
    with pytest.raises(InferenceServerError) as info:
        start_inference_server(
            SCORE_PY, empty_version_dir, log_path=tmp_path / "server.log", startup_timeout=60
        )
    assert "No MLflow model" in str(info.value)
