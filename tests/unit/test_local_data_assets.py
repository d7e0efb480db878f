"""Local data assets: versions are immutable, and a version appears whole or not at all."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from retrain.local.platform import LocalPlatform
from retrain.ports import PlatformError

CSV = "Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1.5,100\n2024-01-03,1.5,2,1,1.8,120\n"


@pytest.fixture
def platform(tmp_path: Path) -> LocalPlatform:
    return LocalPlatform(tmp_path / "state")


def _csv(tmp_path: Path, text: str = CSV, name: str = "snap.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_register_copies_the_snapshot_with_its_metadata(platform: LocalPlatform, tmp_path: Path) -> None:
    source = _csv(tmp_path)
    asset = platform.register_data("msft-daily", "v1", str(source), {"ticker": "MSFT"})
    stored = platform.state_dir / "data" / "msft-daily" / "v1"
    assert asset.uri == str(stored / "data.csv")
    assert (stored / "data.csv").read_text() == CSV
    meta = json.loads((stored / "asset.json").read_text())
    assert meta["name"] == "msft-daily" and meta["version"] == "v1" and meta["tags"] == {"ticker": "MSFT"}
    assert len(meta["sha256"]) == 64 and meta["created"]
    source.unlink()  # the asset does not depend on the caller's file
    assert Path(asset.uri).read_text() == CSV
    assert platform.get_data("msft-daily", "v1") == asset


def test_same_version_same_content_returns_the_first_asset(platform: LocalPlatform, tmp_path: Path) -> None:
    first = platform.register_data("msft-daily", "v1", str(_csv(tmp_path)), {"run": "1"})
    again = platform.register_data("msft-daily", "v1", str(_csv(tmp_path, name="copy.csv")), {"run": "2"})
    assert again == first and again.tags == {"run": "1"}


def test_same_version_different_content_is_refused(platform: LocalPlatform, tmp_path: Path) -> None:
    platform.register_data("msft-daily", "v1", str(_csv(tmp_path)), {})
    with pytest.raises(PlatformError, match="immutable.*new version"):
        platform.register_data(
            "msft-daily", "v1", str(_csv(tmp_path, CSV + "2024-01-04,1,1,1,1,1\n", "b.csv")), {}
        )
    assert (platform.state_dir / "data" / "msft-daily" / "v1" / "data.csv").read_text() == CSV


def test_a_failed_copy_leaves_no_version_behind(platform: LocalPlatform, tmp_path: Path, monkeypatch) -> None:
    real_copy = shutil.copyfile

    def copy_then_fail(src: str, dst: str) -> None:
        real_copy(src, dst)
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copyfile", copy_then_fail)
    with pytest.raises(OSError, match="disk full"):
        platform.register_data("msft-daily", "v1", str(_csv(tmp_path)), {})
    name_dir = platform.state_dir / "data" / "msft-daily"
    assert list(name_dir.iterdir()) == []  # neither the version nor a staging leftover
    monkeypatch.setattr(shutil, "copyfile", real_copy)
    assert Path(platform.register_data("msft-daily", "v1", str(_csv(tmp_path)), {}).uri).read_text() == CSV


def test_concurrent_registrations_of_one_version_agree(platform: LocalPlatform, tmp_path: Path) -> None:
    source = _csv(tmp_path)
    results: list = []

    def register() -> None:
        results.append(platform.register_data("msft-daily", "v1", str(source), {}))

    threads = [threading.Thread(target=register) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and len(set(map(str, results))) == 1
    assert sorted(p.name for p in (platform.state_dir / "data" / "msft-daily").iterdir()) == ["v1"]


@pytest.mark.parametrize(("name", "version"), [("../x", "v1"), ("msft", "a/b"), ("", "v1"), ("msft", "..")])
def test_unsafe_names_are_rejected(platform: LocalPlatform, tmp_path: Path, name: str, version: str) -> None:
    with pytest.raises(PlatformError, match="invalid"):
        platform.register_data(name, version, str(_csv(tmp_path)), {})


def test_missing_file_is_a_clear_error(platform: LocalPlatform, tmp_path: Path) -> None:
    with pytest.raises(PlatformError, match="does not exist"):
        platform.register_data("msft-daily", "v1", str(tmp_path / "nope.csv"), {})
