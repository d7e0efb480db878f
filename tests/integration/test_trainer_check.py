"""`retrain check-trainer` on every registered trainer: each keeps the contract. Real trainer runs on the
bundled sample. What the check finds on a broken trainer, its refit=false rule and a champion of another
family are in test_trainer_check_findings.py (a file of its own, so that pytest-xdist runs the two on
different workers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrain.trainers import get_trainer, names
from tests.helpers import check_trainer_cli

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", names())
def test_each_registered_trainer_keeps_the_contract(tmp_path: Path, name: str) -> None:
    trainer = get_trainer(name)
    params = [f"{k}={v}" for k, v in trainer.check_params.items()]
    done = check_trainer_cli(trainer.folder_path(), *params, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "[FAIL]" not in done.stdout
    for item in (
        "the job's code is the folder plus trainer_kit/",
        "model loads in a fresh process without the trainer folder on sys.path",
        "signature: inputs c0..c{window-1} (oldest first)",
        "champion compared on the same test days",
        "with champion: test_errors.json reproduces metrics.json",
        "rejects a hyperparameter it does not know",
        "refuses a value outside its declared bounds",
        "the run records both fit ends (fitted_data_end, evaluation_fit_end)",
        "the served model was fitted through the data end",
        "batch: the batch runner trains 3 tickers in one process",
        "batch: each good ticker's outputs (model/, metrics.json, test_errors.json, run.json)",
        "batch: a ticker with broken data fails alone, with its reason",
    ):
        assert f"[PASS] {item}" in done.stdout, item
    assert f"checks passed: {trainer.folder_path().name} keeps the trainer contract" in done.stdout


def test_a_folder_without_entry_script_fails_at_once(tmp_path: Path) -> None:
    done = check_trainer_cli(tmp_path, cwd=tmp_path)
    assert done.returncode == 1
    assert (
        "[FAIL] entry script train.py" in done.stdout and "fix: put the trainer's entry script" in done.stdout
    )
