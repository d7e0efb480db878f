"""trainer_kit/stage_inputs.py: the step of an Azure ML batch job that gathers the per-ticker input mounts
into the one folder the batch runner reads (batch.json, `<ticker>.csv` links, champions by path)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer_kit.batch import read_manifest
from trainer_kit.stage_inputs import main


def test_the_mounts_become_one_batch_folder_the_runner_accepts(tmp_path: Path) -> None:
    (tmp_path / "d0").mkdir()
    (tmp_path / "d0" / "msft-daily.csv").write_text("Date,Close\n2026-01-02,1\n")
    (tmp_path / "d1").mkdir()
    (tmp_path / "d1" / "x.csv").write_text("Date,Close\n2026-01-02,2\n")
    model = tmp_path / "champion" / "INPUT_champion_0" / "model"  # an mlflow_model mount, nested
    model.mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    into = tmp_path / "batch_inputs"
    argv = ["--into", str(into), "--data", f"MSFT:{tmp_path / 'd0' / 'msft-daily.csv'}"]
    argv += ["--champion", f"MSFT:{tmp_path / 'champion'}", "--data", f"EURUSD=X:{tmp_path / 'd1'}"]
    assert main(argv) == 0
    entries = read_manifest(into)  # the batch runner's own checks
    assert entries == [
        {"ticker": "MSFT", "data": "MSFT.csv", "champion_model": str(model.resolve())},
        {"ticker": "EURUSD=X", "data": "EURUSD=X.csv"},
    ]
    assert (into / "EURUSD=X.csv").read_text().endswith(",2\n")  # a folder holding one file is that file
    assert json.loads((into / "batch.json").read_text())["tickers"][0]["ticker"] == "MSFT"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "no --data"),
        (["--data", "MSFT"], "send TICKER:PATH"),
        (["--data", "MSFT:{csv}", "--data", "MSFT:{csv}"], "appears twice"),
        (["--data", "MSFT:{csv}", "--champion", "AAPL:{csv}"], "AAPL, which has no --data"),
        (["--data", "MSFT:{csv}", "--champion", "MSFT:{tmp}"], "holds no MLmodel"),
        (["--data", "MSFT:{tmp}/missing.csv"], "is not a file"),
    ],
)
def test_unusable_flags_are_refused_with_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    csv = tmp_path / "a.csv"
    csv.write_text("Date,Close\n")
    filled = [a.format(csv=csv, tmp=tmp_path) for a in argv]
    assert main(["--into", str(tmp_path / "out"), *filled]) == 2
    assert message in capsys.readouterr().err
