"""What `retrain check-trainer` finds: every defect of a deliberately broken copy of the ridge family is
named, with how to fix it; refit=false is held to its documented rule; a champion of another family (an
LSTM) is loaded on its own to confirm every forecast. Real trainer runs on the bundled sample."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from retrain.trainer_check import Report, check_trainer
from tests.helpers import check_trainer_cli

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ridge_refit_false_lstm_champion(tmp_path_factory: pytest.TempPathFactory, trained_model: Path) -> Report:
    """One check of the ridge family with refit=false against an LSTM champion: the two tests below read
    different items of the same report (the refit rule does not touch how the champion is scored)."""
    return check_trainer(
        REPO / "trainers" / "ridge",
        params=["refit=false"],
        champion_model=str(trained_model / "model"),
        work_dir=tmp_path_factory.mktemp("check-ridge"),
    )


def test_refit_false_keeps_the_documented_rule(ridge_refit_false_lstm_champion: Report) -> None:
    """refit=false serves the evaluation model: its fit end is the evaluation's, not the data end."""
    report = ridge_refit_false_lstm_champion
    assert report.ok, [(i.name, i.detail) for i in report.failed()]
    [rule] = [i for i in report.items if i.name.startswith("refit=false")]
    assert rule.name == "refit=false: the served model is the evaluation model"
    assert "fitted_data_end = evaluation_fit_end" in rule.detail


def test_the_ridge_trainer_against_an_lstm_champion(ridge_refit_false_lstm_champion: Report) -> None:
    """A champion of another family: the ridge trainer scores the LSTM on the same days, and the check
    loads the LSTM on its own to confirm every forecast."""
    report = ridge_refit_false_lstm_champion
    assert report.ok, [(i.name, i.detail) for i in report.failed()]
    [same_days] = [i for i in report.items if i.name == "champion compared on the same test days"]
    assert same_days.detail.startswith("the champion, loaded on its own, forecasts exactly these values")


# Appended to a copy of the ridge family: it overrides what the kit does for it, wrongly.
OVERRIDES = """
import trainer_kit.contract as _kit_contract
import trainer_kit.params as _kit_params

# 4. the champion is scored one day early: not the same test days
_champion_forecast = _kit_contract.champion_forecast
_kit_contract.champion_forecast = lambda uri, closes, days: _champion_forecast(uri, closes, days - 1)
# 5. test_errors.json's naive forecasts are not the ones naive_mae was computed from
_payload = _kit_contract.test_errors_payload
_kit_contract.test_errors_payload = lambda dates, actual, model, naive, champ: _payload(
    dates, actual, model, actual, champ
)
# 6. an unknown hyperparameter is silently ignored
_parse_args = _kit_params.parse_args


def _lenient(declared, argv=None, description=""):
    argv = list(sys.argv[1:] if argv is None else argv)
    for i in reversed(range(len(argv) - 1)):
        if argv[i] == "--param" and argv[i + 1].partition("=")[0] not in declared:
            del argv[i : i + 2]
    return _parse_args(declared, argv, description)


_kit_params.parse_args = _lenient
"""


def test_a_broken_trainer_fails_with_what_is_wrong_and_how_to_fix_it(
    tmp_path: Path, trained_model: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(REPO / "trainers" / "ridge", broken, ignore=shutil.ignore_patterns("__pycache__"))
    script = broken / "train.py"
    source = script.read_text()
    for old, new in [
        # 1. the model does not carry its code: it loads only with the trainer folder on sys.path
        ('model_code_files=("ridge_pyfunc.py",)', "model_code_files=()"),
        # 2. the family never refits, although refit is on (and honestly says so in its fit ends)
        ('refit=values["refit"]', "refit=False"),
        # 3. no run(args): the single-ticker job works through main, but the batch runner has nothing to call
        ("config_from_params, run, main = ", "config_from_params, train_once, main = "),
    ]:
        assert old in source, old
        source = source.replace(old, new)
    # A family that overrides what the kit does for it, wrongly (before its main runs):
    main_block = '\nif __name__ == "__main__":\n'
    assert main_block in source
    source = source.replace(main_block, OVERRIDES + main_block)
    script.write_text(source)

    # A champion that loads on its own (the broken trainer's own model does not): an LSTM.
    done = check_trainer_cli(broken, cwd=tmp_path, champion=trained_model / "model")
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    out = done.stdout
    assert "[FAIL] model loads in a fresh process without the trainer folder on sys.path" in out
    assert "ridge_pyfunc" in out and "code_paths=[the modules it imports]" in out
    assert "[FAIL] champion compared on the same test days: the champion's forecasts differ" in out
    assert "[FAIL] alone: test_errors.json reproduces metrics.json: naive_mae" in out
    assert "compute the metrics from the very forecasts written to test_errors.json" in out
    assert (
        "[FAIL] rejects a hyperparameter it does not know: --param check_trainer_unknown_param=1: exit 0"
        in out
    )
    assert "a typo must not train silently" in out
    assert "[FAIL] the served model was fitted through the data end: fitted_data_end 20" in out
    assert "but the data ends" in out and "refit the selected configuration on ALL the data" in out
    assert "[FAIL] batch: the batch runner trains 3 tickers in one process: exit 2" in out
    assert "has no run(args) and parse_args(argv)" in out
    assert "does NOT keep the trainer contract" in out
    # What is fine is still reported as fine.
    assert "[PASS] alone: metrics.json has the gate's metrics, finite" in out
