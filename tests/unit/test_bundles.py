"""retrain/bundles.py on real ridge MLflow models: bundle k+1 is bundle k with the changed tickers
replaced, written whole or not at all, never overwritten; the manifest is validated against the folder."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from retrain.bundles import (
    MANIFEST_FILE,
    BundleEntry,
    BundleError,
    build_bundle,
    model_folder,
    read_manifest,
)
from tests.bundle_models import ridge_model

TICKERS = {"MSFT": 10, "BRK.B": 5, "BRK-B": 12}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    made = {t: ridge_model(root / model_folder(t), t, w) for t, w in TICKERS.items()}
    made["MSFT-v2"] = ridge_model(root / "msft-v2", "MSFT-v2", 8)
    return made


def entry(ticker: str, version: str = "1") -> BundleEntry:
    return BundleEntry(f"forecast-{model_folder(ticker)}", version, "ridge", "2026-12-04")


def first_bundle(out: Path, models: dict[str, Path]):
    changes = {t: (models[t], entry(t)) for t in TICKERS}
    return build_bundle(
        out, None, changes, name="fleet", version="1", endpoint="forecast-a1", orchestration_ids=["o1"]
    )


def files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in folder.rglob("*") if p.is_file()}


def test_first_bundle_round_trips_and_keeps_lossy_tickers_apart(tmp_path, models):
    written = first_bundle(tmp_path / "v1", models)
    assert read_manifest(tmp_path / "v1") == written
    assert written.parent_version is None and written.changed == ("BRK-B", "BRK.B", "MSFT")
    paths = {t: e.path for t, e in written.tickers.items()}
    # BRK.B and BRK-B must not share (or overwrite) one folder.
    assert paths == {
        "MSFT": "models/msft",
        "BRK-B": "models/brk-b",
        "BRK.B": f"models/{model_folder('BRK.B')}",
    }
    assert paths["BRK.B"] != paths["BRK-B"]
    for ticker, path in paths.items():
        original = files(models[ticker])
        copied = files(tmp_path / "v1" / path)
        assert original.keys() == copied.keys()
        assert all(original[k].read_bytes() == copied[k].read_bytes() for k in original)


def test_next_version_replaces_only_the_changed_ticker_and_shares_the_rest(tmp_path, models):
    parent = first_bundle(tmp_path / "v1", models)
    child = build_bundle(
        tmp_path / "v2",
        tmp_path / "v1",
        {"MSFT": (models["MSFT-v2"], entry("MSFT", "2"))},
        name="fleet",
        version="2",
        endpoint="forecast-a1",
        orchestration_ids=["retrain-msft-20261206t054000z"],
    )
    assert child.parent_version == "1" and child.changed == ("MSFT",)
    assert child.orchestration_ids == ("retrain-msft-20261206t054000z",)
    assert child.tickers["MSFT"].model_version == "2"
    assert {t: child.tickers[t] for t in ("BRK.B", "BRK-B")} == {
        t: parent.tickers[t] for t in ("BRK.B", "BRK-B")
    }
    new_msft = files(tmp_path / "v2" / "models" / "msft")
    assert new_msft.keys() == files(models["MSFT-v2"]).keys()
    assert all(p.read_bytes() == models["MSFT-v2"].joinpath(k).read_bytes() for k, p in new_msft.items())
    # Unchanged tickers are hard links to the parent's files (same file system): no bytes copied.
    for rel, path in files(tmp_path / "v2" / "models" / "brk-b").items():
        assert os.path.samefile(path, tmp_path / "v1" / "models" / "brk-b" / rel)
    # The parent is untouched.
    assert read_manifest(tmp_path / "v1") == parent


def test_an_existing_bundle_is_never_overwritten(tmp_path, models):
    first_bundle(tmp_path / "v1", models)
    before = (tmp_path / "v1" / MANIFEST_FILE).read_bytes()
    with pytest.raises(BundleError, match="immutable"):
        first_bundle(tmp_path / "v1", models)
    assert (tmp_path / "v1" / MANIFEST_FILE).read_bytes() == before


def test_a_failed_build_leaves_nothing_behind(tmp_path, models):
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    changes = {"MSFT": (models["MSFT"], entry("MSFT")), "NVDA": (not_a_model, entry("NVDA"))}
    with pytest.raises(BundleError, match="no MLmodel"):
        build_bundle(
            tmp_path / "out", None, changes, name="fleet", version="1", endpoint="e", orchestration_ids=[]
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no bundle, no staging folder


def test_removed_tickers_leave_and_are_recorded(tmp_path, models):
    first_bundle(tmp_path / "v1", models)
    child = build_bundle(
        tmp_path / "v2",
        tmp_path / "v1",
        {},
        name="fleet",
        version="2",
        endpoint="e",
        orchestration_ids=[],
        removed=["BRK.B"],
    )
    assert sorted(child.tickers) == ["BRK-B", "MSFT"] and child.removed == ("BRK.B",)
    assert not (tmp_path / "v2" / "models" / model_folder("BRK.B")).exists()
    with pytest.raises(BundleError, match="does not hold"):
        build_bundle(
            tmp_path / "v3",
            tmp_path / "v2",
            {},
            name="fleet",
            version="3",
            endpoint="e",
            orchestration_ids=[],
            removed=["NVDA"],
        )
    with pytest.raises(BundleError, match="nothing changes"):
        build_bundle(
            tmp_path / "v3",
            tmp_path / "v2",
            {},
            name="fleet",
            version="3",
            endpoint="e",
            orchestration_ids=[],
        )
    with pytest.raises(BundleError, match="not 'other'"):
        build_bundle(
            tmp_path / "v3",
            tmp_path / "v2",
            {},
            name="other",
            version="3",
            endpoint="e",
            orchestration_ids=[],
            removed=["MSFT"],
        )


@pytest.mark.skipif(not os.access("/dev/shm", os.W_OK), reason="needs a second file system (/dev/shm)")
def test_across_file_systems_the_files_are_copied(tmp_path, models):
    """/dev/shm is tmpfs, the models are on the test's file system: os.link fails with EXDEV there."""
    other_fs = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        if os.stat(other_fs).st_dev == os.stat(models["MSFT"]).st_dev:
            pytest.skip("/dev/shm is on the same file system here")
        written = first_bundle(other_fs / "v1", models)
        assert read_manifest(other_fs / "v1") == written
        for path in files(other_fs / "v1" / "models").values():
            assert path.stat().st_nlink == 1
    finally:
        shutil.rmtree(other_fs, ignore_errors=True)


def _rewrite(folder: Path, change) -> None:
    path = folder / MANIFEST_FILE
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="retrain-bundle/9"), "this code reads 'retrain-bundle/1'"),
        (lambda d: d["tickers"]["MSFT"].update(path="/etc"), "must be relative"),
        (lambda d: d["tickers"]["MSFT"].update(path="models"), "no MLmodel"),
        (lambda d: d["tickers"].update(msft=d["tickers"].pop("MSFT")), "canonically, as 'MSFT'"),
        (lambda d: d["tickers"].update({"MS FT": d["tickers"].pop("MSFT")}), "invalid ticker"),
        (lambda d: d.update(changed=["NVDA"]), "not in 'tickers'"),
        (lambda d: d["tickers"]["MSFT"].update(fitted_data_end="yesterday"), "YYYY-MM-DD"),
        (lambda d: d.update(tickers={}), "non-empty object"),
        (lambda d: d.pop("name"), "'name' must be a non-empty string"),
    ],
)
def test_read_manifest_refuses_a_broken_bundle_saying_what_is_wrong(tmp_path, models, change, message):
    first_bundle(tmp_path / "v1", models)
    _rewrite(tmp_path / "v1", change)
    with pytest.raises(BundleError, match=message.replace("(", r"\(").replace(".", r"\.")):
        read_manifest(tmp_path / "v1")


def test_a_folder_without_a_manifest_is_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="has no bundle.json"):
        read_manifest(tmp_path)


def test_a_path_leading_outside_the_bundle_is_refused_even_to_a_real_model(tmp_path, models):
    first_bundle(tmp_path / "v1", models)
    shutil.copytree(models["MSFT"], tmp_path / "outside")
    _rewrite(tmp_path / "v1", lambda d: d["tickers"]["MSFT"].update(path="../outside"))
    with pytest.raises(BundleError, match="leads outside the bundle folder"):
        read_manifest(tmp_path / "v1")
