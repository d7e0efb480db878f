"""scorer/score.py's fast loader for a bundle's models (`load_python_model_fast`, used for every model of a
family after its first): for the ridge, gbr and lstm families it builds what mlflow.pyfunc.load_model builds
(metadata, wrapper, artifacts) and answers the same; a model it does not reproduce goes through MLflow's own
loader; a broken model still fails the bundle's load (the slot's start) naming the ticker, its folder and
the error MLflow's loader gives for it."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import textwrap
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests.bundle_models import closes_for, gbr_model, ridge_bundle, ridge_model

REPO = Path(__file__).resolve().parents[2]
SCORE_PY = REPO / "scorer" / "score.py"
sys.path.insert(0, str(REPO / "trainer"))  # trainer/ is a job snapshot, not a package

import train  # noqa: E402

WINDOW = 10
IDENTITY_NAME = "forecast-msft"


def _load_score_module():
    spec = importlib.util.spec_from_file_location("scorer_score_under_test_fast_load", SCORE_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


score = _load_score_module()


def lstm_model(dest: Path) -> Path:
    """The LSTM trainer's pyfunc model from a one-epoch in-process fit (only sameness matters here)."""
    torch.manual_seed(7)
    fitted = train.fit_closes(
        closes_for("MSFT", 300), train.TrainConfig(window=WINDOW, hidden_size=8, max_epochs=1, patience=1)
    )
    ends = {"fitted_data_end": "2026-12-04", "evaluation_fit_end": "2026-11-01"}
    dest.parent.mkdir(parents=True, exist_ok=True)
    return train.FAMILY.save_model(fitted, dest, ends)


@pytest.fixture(scope="module")
def family_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {
        "ridge": ridge_model(root / "ridge", "MSFT", WINDOW),
        "gbr": gbr_model(root / "gbr", "MSFT", WINDOW),
        "lstm": lstm_model(root / "lstm"),
    }


def windows(n: int = 25) -> np.ndarray:
    closes = closes_for("MSFT", 300)
    return np.stack([closes[i : i + WINDOW] for i in range(0, 10 * n, 10)])


def frame(rows: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[f"c{i}" for i in range(rows.shape[1])], dtype="float64")


@pytest.mark.parametrize("family", ["ridge", "gbr", "lstm"])
def test_the_fast_loader_builds_and_answers_what_mlflow_load_model_does(family_models, family):
    model_dir = family_models[family]
    fast = score.load_python_model_fast(model_dir)
    assert fast is not None, f"a {family} model must take the fast path"
    reference = mlflow.pyfunc.load_model(str(model_dir), suppress_warnings=True)
    assert type(fast) is type(reference)
    assert type(fast._model_impl) is type(reference._model_impl)
    assert type(fast.unwrap_python_model()) is type(reference.unwrap_python_model())
    assert fast.metadata.to_dict() == reference.metadata.to_dict()  # libyaml parses as PyYAML does
    assert fast._model_impl.context.artifacts == reference._model_impl.context.artifacts
    rows = windows()
    pd.testing.assert_frame_equal(fast.predict(frame(rows)), reference.predict(frame(rows)), check_exact=True)

    # Served: a bundle's later model (fast loader) answers as the single-model path (load_model), to 1e-9.
    identity = score.ModelIdentity(IDENTITY_NAME, "1")
    in_bundle = score.load_model_dir(model_dir, identity, check_requirements=False)
    alone = score.load(model_dir, {})
    assert in_bundle.fast_forecast is not None and in_bundle.window == alone.window == WINDOW
    np.testing.assert_allclose(
        score.predict(in_bundle, rows.tolist()), score.predict(alone, rows.tolist()), rtol=1e-9, atol=0
    )


OTHER_LOADER = textwrap.dedent(
    """
    import numpy as np
    import pandas as pd


    class Doubler:
        def predict(self, model_input, params=None):
            return pd.DataFrame({"forecast": np.asarray(model_input, dtype=float)[:, -1] * 2.0})


    def _load_pyfunc(data_path):
        return Doubler()
    """
)


def test_a_model_with_another_loader_goes_through_mlflows_loader(tmp_path):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    (tmp_path / "doubler_loader.py").write_text(OTHER_LOADER)
    (tmp_path / "data").mkdir()
    model_dir = tmp_path / "other"
    mlflow.pyfunc.save_model(
        str(model_dir),
        loader_module="doubler_loader",
        data_path=str(tmp_path / "data"),
        code_paths=[str(tmp_path / "doubler_loader.py")],
        signature=ModelSignature(inputs=Schema([ColSpec("double", f"c{i}") for i in range(3)])),
        metadata={"window": 3},
    )
    assert score.load_python_model_fast(model_dir) is None
    loaded = score.load_model_dir(model_dir, score.ModelIdentity("other", "1"), check_requirements=False)
    assert loaded.fast_forecast is None
    assert score.score_body(loaded, b'{"instances": [[1, 2, 3], [4, 5, 6.5]]}')["forecast"] == [6.0, 13.0]


def test_a_flavour_key_it_does_not_know_goes_through_mlflows_loader(tmp_path, family_models):
    """A key a later MLflow may add could change what loading means: MLflow's loader decides."""
    model_dir = shutil.copytree(family_models["ridge"], tmp_path / "ridge")
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    mlmodel["flavors"]["python_function"]["a_later_mlflow_key"] = "x"
    (model_dir / "MLmodel").unlink()  # not written through: the file may be a hard link
    (model_dir / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    assert score.load_python_model_fast(model_dir) is None
    loaded = score.load_model_dir(model_dir, score.ModelIdentity("r", "1"), check_requirements=False)
    alone = score.load(family_models["ridge"], {})
    rows = windows(5).tolist()
    assert score.predict(loaded, rows) == score.predict(alone, rows)


def _replace(path: Path, content: bytes | None) -> None:
    """Remove `path` or give it new content without writing through a hard link to another model."""
    path.unlink()
    if content is not None:
        path.write_bytes(content)


BREAKAGES = {
    "its artifact is missing": lambda m: _replace(m / "artifacts" / "params.json", None),
    "its pickle is cut short": lambda m: _replace(
        m / "python_model.pkl", (m / "python_model.pkl").read_bytes()[:20]
    ),
    "its MLmodel is not YAML": lambda m: _replace(m / "MLmodel", b"flavors: [python_function\n"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_a_broken_model_fails_the_slot_start_naming_the_ticker_and_mlflows_reason(
    tmp_path, monkeypatch, breakage
):
    """BBB is not the first ridge model, so the fast loader meets the breakage; the slot's init() fails
    with the ticker, the folder and the error mlflow.pyfunc.load_model gives for the same folder."""
    ridge_bundle(tmp_path / "b", tmp_path / "models", {"AAA": 5, "BBB": 5, "CCC": 5})
    broken = tmp_path / "b" / "models" / "bbb"
    BREAKAGES[breakage](broken)
    with pytest.raises(Exception) as from_mlflow:
        mlflow.pyfunc.load_model(str(broken), suppress_warnings=True)
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path / "b"))
    monkeypatch.setattr(score, "_bundle", None)
    monkeypatch.setattr(score, "_model", None)
    with pytest.raises(ValueError, match=r"tickers\['BBB'\]: cannot load the model in 'models/bbb': ") as got:
        score.init()
    assert type(got.value.__cause__) is type(from_mlflow.value)
    assert str(got.value).endswith(str(from_mlflow.value))
    assert score._bundle is None


def test_a_bundle_loads_each_familys_first_model_through_mlflow_and_the_rest_fast(tmp_path, monkeypatch):
    ridge_bundle(tmp_path / "b", tmp_path / "models", {"AAA": 5, "BBB": 6, "CCC": 7})
    fast_loaded: list[str] = []
    real = score.load_python_model_fast

    def recording(model_dir: Path):
        model = real(model_dir)
        if model is not None:
            fast_loaded.append(model_dir.name)
        return model

    monkeypatch.setattr(score, "load_python_model_fast", recording)
    loaded = score.load_bundle(tmp_path / "b" / "bundle.json")
    assert fast_loaded == ["bbb", "ccc"]  # AAA: MLflow's loader, with its requirements check
    assert {t: m.model.window for t, m in loaded.tickers.items()} == {"AAA": 5, "BBB": 6, "CCC": 7}
