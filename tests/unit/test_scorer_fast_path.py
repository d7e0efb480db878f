"""The scorer's fast path: init() checks the signature once and scores through the model's own numpy
path (`forecast_from_closes`), which must answer exactly as `pyfunc.predict(DataFrame)` does; any other
MLflow model is scored through predict()."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import textwrap
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCORE_PY = REPO / "scorer" / "score.py"
sys.path.insert(0, str(REPO / "trainer"))  # trainer/ is a job snapshot, not a package

import train  # noqa: E402
from forecast_data import prepare  # noqa: E402
from forecast_net import LSTMForecaster  # noqa: E402

from trainer_kit.data import windows  # noqa: E402
from trainer_kit.family import InProcessFit  # noqa: E402

WINDOW = 12


def _load_score_module():
    spec = importlib.util.spec_from_file_location("scorer_score_under_test_fast_path", SCORE_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


score = _load_score_module()


def random_walk(rng: np.random.Generator, n: int, start: float) -> np.ndarray:
    return start * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))


@pytest.fixture(scope="module")
def forecaster_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trainer's real pyfunc model (save_model, the MLflow artefact Azure serves), with a seeded
    untrained network: the answers only have to be the same on both paths, not good."""
    torch.manual_seed(7)
    closes = random_walk(np.random.default_rng(3), 300, 50.0)
    data = prepare(closes, window=WINDOW)
    config = train.TrainConfig(window=WINDOW, hidden_size=16)
    fit = train.FitResult(
        net=LSTMForecaster(hidden_size=16), epochs=0, best_val_loss=0.0, seconds=0.0, data=data
    )
    samples = windows(closes, WINDOW)
    end = len(closes) - 1
    fitted = InProcessFit(
        config=config,
        data=samples,
        evaluation=fit,
        served=fit,
        evaluation_predict=partial(train.predict, fit),
        served_predict=partial(train.predict, fit),
        test_days=samples.target_days(samples.test),
        evaluation_fit_end=end,
        served_fit_end=end,
    )
    dest = tmp_path_factory.mktemp("forecaster") / "model"
    return train.FAMILY.save_model(fitted, dest, {})


@pytest.fixture(scope="module")
def loaded(forecaster_dir: Path):
    return score.load(forecaster_dir, {})


def pyfunc_forecast(loaded_model, rows: np.ndarray) -> np.ndarray:
    frame = pd.DataFrame(rows, columns=[f"c{i}" for i in range(loaded_model.window)], dtype="float64")
    return loaded_model.pyfunc.predict(frame)["forecast"].to_numpy(dtype=np.float64)


def test_init_picks_the_models_own_numpy_path(loaded):
    assert loaded.window == WINDOW
    assert loaded.fast_forecast is not None
    assert loaded.fast_forecast.__name__ == "forecast_from_closes"
    assert loaded.fast_forecast.__self__ is loaded.pyfunc.unwrap_python_model()


def test_fast_path_answers_as_pyfunc_predict_on_random_windows(loaded):
    """A few hundred random valid requests (lengths, price levels, volatility), one per request as the
    server sees them: each answer equals pyfunc.predict on the same last `window` closes, to 1e-9."""
    rng = np.random.default_rng(12)
    served, expected = [], []
    for _ in range(300):
        length = int(rng.integers(WINDOW, WINDOW + 40))
        closes = (10.0 ** rng.uniform(-2, 4)) * np.exp(
            np.cumsum(rng.normal(0, rng.uniform(0.001, 0.1), length))
        )
        body = json.dumps({"close": closes.tolist()}).encode()
        served.append(score.score_body(loaded, body)["forecast"][0])
        expected.append(pyfunc_forecast(loaded, closes[-WINDOW:][None, :])[0])
    np.testing.assert_allclose(served, expected, rtol=1e-9, atol=0.0)
    assert len(set(served)) == 300  # different histories, different forecasts: the model really ran


def test_fast_path_answers_as_pyfunc_predict_for_many_instances(loaded):
    rng = np.random.default_rng(5)
    rows = np.stack([random_walk(rng, WINDOW, float(rng.uniform(1, 500))) for _ in range(200)])
    body = json.dumps({"instances": rows.tolist()}).encode()
    np.testing.assert_allclose(
        score.score_body(loaded, body)["forecast"], pyfunc_forecast(loaded, rows), rtol=1e-9, atol=0.0
    )


def test_the_numpy_path_refuses_a_wrong_shape(loaded):
    with pytest.raises(ValueError, match=rf"shape \(n, {WINDOW}\)"):
        loaded.fast_forecast(np.ones((2, WINDOW + 1)))


PLAIN_MODEL_CODE = textwrap.dedent(
    """
    import mlflow
    import numpy as np
    import pandas as pd


    class LastClose(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return pd.DataFrame({"forecast": np.asarray(model_input, dtype=float)[:, -1] * 1.5})


    class LyingFastPath(LastClose):
        def forecast_from_closes(self, closes):
            return np.asarray(closes)[:, -1] * 1.5 + 1e-6


    mlflow.models.set_model(MODEL())
    """
)


def save_plain_model(path: Path, model_class: str = "LastClose", columns: list[str] | None = None) -> Path:
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    code = path.parent / f"{path.name}_code.py"
    code.write_text(PLAIN_MODEL_CODE.replace("MODEL", model_class))
    columns = columns or ["c0", "c1", "c2"]
    signature = ModelSignature(inputs=Schema([ColSpec("double", c) for c in columns]))
    mlflow.pyfunc.save_model(str(path), python_model=str(code), signature=signature, metadata={"window": 3})
    return path


def test_any_other_mlflow_model_is_scored_through_predict(tmp_path):
    loaded = score.load(save_plain_model(tmp_path / "plain"), {})
    assert loaded.fast_forecast is None
    answer = score.score_body(loaded, b'{"instances": [[1, 2, 3], [4, 5, 6.5]]}')
    assert answer["forecast"] == [4.5, 9.75]


def test_a_numpy_path_that_disagrees_with_predict_is_not_used(tmp_path, caplog):
    model_dir = save_plain_model(tmp_path / "lying", "LyingFastPath")
    with caplog.at_level(logging.WARNING, logger="azmlinfsrv.score"):
        loaded = score.load(model_dir, {})
    assert loaded.fast_forecast is None
    assert "scoring through predict()" in caplog.text
    assert score.score_body(loaded, b'{"close": [1, 2, 3]}')["forecast"] == [4.5]


def test_a_signature_the_requests_cannot_match_fails_init(tmp_path):
    model_dir = save_plain_model(tmp_path / "other-columns", columns=["open", "high", "close"])
    with pytest.raises(
        ValueError, match=r"takes the columns \[open, high, close\]; this scorer sends c0..c2"
    ):
        score.load(model_dir, {})
