"""The trainer CLI fails fast, with a non-zero exit and one clear stderr line, on unusable input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retrain.job_code import kit_pythonpath

TRAIN_PY = Path(__file__).resolve().parents[2] / "trainer" / "train.py"


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": kit_pythonpath(os.environ.get("PYTHONPATH"))}
    return subprocess.run(
        [sys.executable, str(TRAIN_PY), "--output", str(tmp_path / "out"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )


def write_csv(path: Path, close: list) -> Path:
    dates = pd.bdate_range("2020-01-01", periods=len(close)).strftime("%Y-%m-%d")
    pd.DataFrame({"Date": dates, "Close": close}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("make_data", "message"),
    [
        (lambda d: d / "nope.csv", "error: data file not found: "),
        (
            lambda d: write_csv(d / "short.csv", list(np.linspace(10, 20, 30))),
            "error: too few rows: 30 closes",
        ),
        (
            lambda d: write_csv(d / "text.csv", [10.0] * 100 + ["n/a"] + [11.0] * 100),
            "error: non-numeric Close",
        ),
    ],
    ids=["missing", "too-short", "non-numeric"],
)
def test_bad_data_exits_non_zero_with_one_line(tmp_path: Path, make_data, message: str) -> None:
    result = run_cli(tmp_path, "--data", str(make_data(tmp_path)))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(message)
    assert not (tmp_path / "out" / "model").exists()


def test_bad_hyperparameter_is_rejected_by_the_parser(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--data", "x.csv", "--window", "0")
    assert result.returncode == 2 and "--window: expected an integer from 2 to 500, got 0" in result.stderr


def test_hyperparameters_arrive_generically_as_param_and_parse_like_their_flags() -> None:
    """The contract's `--param key=value` sets the same value as the flag (and wins over it)."""
    sys.path.insert(0, str(TRAIN_PY.parent))
    try:
        from train import parse_args
    finally:
        sys.path.remove(str(TRAIN_PY.parent))
    args = parse_args(
        ["--data", "d.csv", "--output", "o", "--max-epochs", "9", "--param", "max_epochs=5"]
        + ["--param", "learning_rate=0.01", "--param", "window=10"]
    )
    assert (args.max_epochs, args.learning_rate, args.window) == (5, 0.01, 10)
    assert parse_args(["--data", "d.csv", "--output", "o", "--max-epochs", "7"]).max_epochs == 7


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("epochz=3", "--param 'epochz=3': use key=value with key one of batch_size, hidden_size"),
        ("max_epochs=0", "--param max_epochs='0': expected an integer from 1 to 1000, got 0"),
        ("champion_model=x", "use key=value with key one of"),
        ("no_equals_sign", "use key=value"),
    ],
)
def test_unusable_param_fails_with_what_to_send(tmp_path: Path, param: str, message: str) -> None:
    done = run_cli(tmp_path, "--data", "d.csv", "--param", param)
    assert done.returncode == 2
    assert message in done.stderr
