"""The served artefact stays a standard MLflow model: `mlflow models serve --env-manager local` loads the
trainer's model (with its numpy path) on 127.0.0.1 and answers what the scorer's fast path answers."""

from __future__ import annotations

import http.client
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import group_exists, mlflow_models_serve

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCORE_PY = REPO / "scorer" / "score.py"
LOCALHOST = "127.0.0.1"


def _load_score_module():
    spec = importlib.util.spec_from_file_location("scorer_score_mlflow_serve", SCORE_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def served(trained_model: Path, tmp_path_factory: pytest.TempPathFactory):
    log_path = tmp_path_factory.mktemp("mlflow-serve") / "serve.log"
    with mlflow_models_serve(trained_model / "model", log_path) as serve:
        yield serve.port
    assert not group_exists(serve.pid)  # the server and every process it started are gone


def test_mlflow_models_serve_answers_as_the_scorers_fast_path(served, trained_model, sample_csv):
    score = _load_score_module()
    loaded = score.load(trained_model / "model", {})
    assert loaded.fast_forecast is not None  # the scorer's numpy path, on this same artefact
    closes = pd.read_csv(sample_csv)["Close"].to_numpy(dtype=float)
    w = loaded.window
    rows = np.stack([closes[-w:], closes[-w - 10 : -10], closes[-w - 300 : -300]])
    columns = [f"c{i}" for i in range(w)]
    body = json.dumps({"dataframe_split": {"columns": columns, "data": rows.tolist()}})
    conn = http.client.HTTPConnection(LOCALHOST, served, timeout=60)
    try:
        conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 200, payload
    from_serve = [p["forecast"] if isinstance(p, dict) else p for p in payload["predictions"]]
    from_scorer = score.score_body(loaded, json.dumps({"instances": rows.tolist()}).encode())["forecast"]
    np.testing.assert_allclose(from_serve, from_scorer, rtol=1e-9, atol=0.0)
