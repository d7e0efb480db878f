"""A training job's code folder (retrain.job_code): the trainer folder plus the trainer kit, assembled the
same way every time; and the batch runner's manifest rules (trainer_kit/batch.py), refused before training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrain.job_code import BATCH_RUNNER, JobCodeError, assemble_job_code
from trainer_kit.batch import BatchError, read_manifest

REPO = Path(__file__).resolve().parents[2]


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_the_job_code_is_the_trainer_folder_plus_the_kit_and_the_same_every_time(tmp_path: Path) -> None:
    folder = tmp_path / "ridge"
    folder.mkdir()
    for name in ("train.py", "ridge_pyfunc.py", "hyperparameters.json", "environment.yml"):
        (folder / name).write_bytes((REPO / "trainers" / "ridge" / name).read_bytes())
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"stale")

    first = assemble_job_code(folder, tmp_path / "one")
    second = assemble_job_code(folder, tmp_path / "two")
    tree = _tree(first)
    assert tree == _tree(second)  # bytes and mtimes: a content-hashed snapshot is reused
    assert {"train.py", "ridge_pyfunc.py", "hyperparameters.json", BATCH_RUNNER} <= set(tree)
    assert not any("__pycache__" in name for name in tree)
    assert tree[BATCH_RUNNER][0] == (REPO / BATCH_RUNNER).read_bytes()


def test_a_trainer_folder_holding_its_own_kit_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mine" / "trainer_kit").mkdir(parents=True)
    with pytest.raises(JobCodeError, match="copied in at submit time"):
        assemble_job_code(tmp_path / "mine", tmp_path / "out")


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (None, "no batch.json"),
        ({"tickers": []}, "non-empty list"),
        ({"tickers": [{"ticker": "MSFT"}]}, 'needs "ticker" and "data"'),
        ({"tickers": [{"ticker": "../x", "data": "x.csv"}]}, "is not a ticker"),
        ({"tickers": [{"ticker": "MSFT", "data": "../MSFT.csv"}]}, "must be a file name inside"),
        ({"tickers": [{"ticker": "MSFT", "data": "a.csv"}, {"ticker": "msft", "data": "b.csv"}]}, "twice"),
    ],
)
def test_an_unusable_batch_manifest_is_refused_saying_what_to_send(
    tmp_path: Path, manifest: dict | None, message: str
) -> None:
    if manifest is not None:
        (tmp_path / "batch.json").write_text(json.dumps(manifest))
    with pytest.raises(BatchError, match=message):
        read_manifest(tmp_path)
