"""How the scorer finds the MLflow model under AZUREML_MODEL_DIR and names it (pure path logic)."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCORE_PY = Path(__file__).resolve().parents[2] / "scorer" / "score.py"


def _load_score_module():
    spec = importlib.util.spec_from_file_location("scorer_score_under_test_dirs", SCORE_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


score = _load_score_module()


def mlflow_model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "MLmodel").write_text("flavors: {}\n")
    return folder


def test_a_model_folder_itself(tmp_path):
    model = mlflow_model(tmp_path / "model")
    assert score.find_mlflow_model_dir(model) == model


def test_azure_nesting_finds_the_model_below_the_version_folder(tmp_path):
    version_dir = tmp_path / "azureml-models" / "msft-forecaster" / "7"
    model = mlflow_model(version_dir / "model")
    assert score.find_mlflow_model_dir(version_dir) == model


def test_search_goes_a_few_levels_down_but_not_further(tmp_path):
    deep = mlflow_model(tmp_path / "a" / "b" / "c" / "model")
    assert score.find_mlflow_model_dir(tmp_path, max_depth=4) == deep
    with pytest.raises(FileNotFoundError, match="up to 3 levels below"):
        score.find_mlflow_model_dir(tmp_path, max_depth=3)


def test_the_shallowest_model_wins_then_sorted_order(tmp_path):
    mlflow_model(tmp_path / "a" / "deeper" / "model")
    mlflow_model(tmp_path / "z")
    first = mlflow_model(tmp_path / "b")
    assert score.find_mlflow_model_dir(tmp_path) == first


def test_hidden_folders_are_skipped(tmp_path):
    mlflow_model(tmp_path / ".cache" / "model")
    visible = mlflow_model(tmp_path / "model")
    assert score.find_mlflow_model_dir(tmp_path) == visible


def test_no_model_is_a_clear_error(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(FileNotFoundError, match="No MLflow model"):
        score.find_mlflow_model_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        score.find_mlflow_model_dir(tmp_path / "missing")


def test_identity_from_azure_nesting_beats_the_environment(tmp_path):
    env = {"RETRAIN_MODEL_NAME": "other", "RETRAIN_MODEL_VERSION": "99"}
    identity = score.model_identity(tmp_path / "msft-forecaster" / "12", env)
    assert (identity.name, identity.version) == ("msft-forecaster", "12")


def test_identity_from_the_environment_without_nesting(tmp_path):
    env = {"RETRAIN_MODEL_NAME": "msft-forecaster", "RETRAIN_MODEL_VERSION": "3"}
    identity = score.model_identity(tmp_path / "model", env)
    assert (identity.name, identity.version) == ("msft-forecaster", "3")


def test_identity_unknown_without_nesting_or_environment(tmp_path):
    identity = score.model_identity(tmp_path / "model", {})
    assert (identity.name, identity.version) == ("unknown", "unknown")


@pytest.mark.parametrize(
    ("metadata", "window"),
    [({"window": 20, "target": "next_close"}, 20), ({"window": 1}, 1)],
)
def test_window_from_metadata(metadata, window):
    assert score.window_from_metadata(metadata) == window


@pytest.mark.parametrize(
    "metadata", [None, {}, {"window": 0}, {"window": "20"}, {"window": 2.0}, {"window": True}]
)
def test_bad_window_metadata_is_refused(metadata):
    with pytest.raises(ValueError, match="positive integer 'window'"):
        score.window_from_metadata(metadata)
