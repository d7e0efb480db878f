"""The local platform's model bundles (ports.MLPlatform) on its real MLflow registry: versions
built from the parent's folder and the registered models' folders (hard links), family and fitted-data
end from the model versions' tags, a replay returning the same version, other content refused, and a
failed build leaving nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from retrain.bundles import MANIFEST_FILE, read_manifest
from retrain.local.platform import LocalPlatform
from retrain.ports import BundleRef, MLPlatform, ModelRef, PlatformError
from tests.local_registry import register_ridge

ENDPOINT = "fleet-models"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalPlatform, dict[str, ModelRef]]:
    platform = LocalPlatform(tmp_path_factory.mktemp("state"))
    work = tmp_path_factory.mktemp("models")
    models = {t: register_ridge(platform, t, w, work) for t, w in {"MSFT": 10, "BRK.B": 5}.items()}
    models["MSFT-2"] = register_ridge(platform, "MSFT", 7, work)
    return platform, models


def test_the_local_platform_registers_bundles(registry):
    platform, _ = registry
    assert isinstance(platform, MLPlatform)


def test_register_builds_versions_from_the_parent_and_the_registered_models(registry):
    platform, models = registry
    first = platform.register_bundle(
        ENDPOINT, "1", None, {"MSFT": models["MSFT"], "BRK.B": models["BRK.B"]}, ["cycle-a", "cycle-b"]
    )
    assert (first.name, first.version, first.endpoint, first.parent_version) == (
        "fleet-models-bundle",
        "1",
        ENDPOINT,
        None,
    )
    assert first.tickers["MSFT"] == {
        "model_name": "forecast-msft",
        "model_version": models["MSFT"].version,
        "family": "ridge",
        "fitted_data_end": "2026-12-04",
    }
    assert first.changed == ["BRK.B", "MSFT"] and first.orchestration_ids == ["cycle-a", "cycle-b"]
    assert platform.get_bundle(ENDPOINT, "1") == first
    assert platform.get_bundle(ENDPOINT, "9") is None

    second = platform.register_bundle(ENDPOINT, "2", first, {"MSFT": models["MSFT-2"]}, ["cycle-c"])
    assert second.parent_version == "1" and second.changed == ["MSFT"]
    assert second.model_of("MSFT") == ModelRef("forecast-msft", models["MSFT-2"].version)
    assert second.model_of("BRK.B") == first.model_of("BRK.B")

    root = platform.state_dir / "bundles" / "fleet-models-bundle"
    assert sorted(p.name for p in root.iterdir()) == ["1", "2"]  # no staging folder or download left
    one, two = read_manifest(root / "1"), read_manifest(root / "2")
    assert one.tickers["MSFT"].model_version == models["MSFT"].version  # version 1 is untouched
    kept = "MLmodel"
    assert (
        os.stat(root / "1" / one.tickers["BRK.B"].path / kept).st_ino
        == os.stat(root / "2" / two.tickers["BRK.B"].path / kept).st_ino
    )  # the unchanged ticker is hard-linked, not copied
    # The changed model is linked from the registry's own artifact folder.
    source = Path(
        platform.client.get_run(
            platform.client.get_model_version("forecast-msft", models["MSFT-2"].version).run_id
        ).info.artifact_uri.removeprefix("file://")
    )
    assert (
        os.stat(source / "model" / kept).st_ino
        == os.stat(root / "2" / two.tickers["MSFT"].path / kept).st_ino
    )


def test_a_replayed_register_returns_the_version_and_other_content_is_refused(registry):
    platform, models = registry
    first = platform.get_bundle(ENDPOINT, "1") or platform.register_bundle(
        ENDPOINT, "1", None, {"MSFT": models["MSFT"], "BRK.B": models["BRK.B"]}, ["cycle-a"]
    )
    manifest = platform.state_dir / "bundles" / "fleet-models-bundle" / "1" / MANIFEST_FILE
    written = manifest.read_text()
    again = platform.register_bundle(
        ENDPOINT, "1", None, {"MSFT": models["MSFT"], "BRK.B": models["BRK.B"]}, ["cycle-a"]
    )
    assert again.tickers == first.tickers and manifest.read_text() == written
    with pytest.raises(PlatformError, match=r"already exists with other content \(tickers \['MSFT'\]"):
        platform.register_bundle(
            ENDPOINT, "1", None, {"MSFT": models["MSFT-2"], "BRK.B": models["BRK.B"]}, ["cycle-x"]
        )
    assert manifest.read_text() == written


def test_bad_requests_say_what_to_send(registry):
    platform, models = registry
    with pytest.raises(PlatformError, match="next whole number"):
        platform.register_bundle(ENDPOINT, "v3", None, {"MSFT": models["MSFT"]}, [])
    other = BundleRef(name="other-bundle", version="1", endpoint="other")
    with pytest.raises(PlatformError, match="not a version of fleet-models-bundle"):
        platform.register_bundle(ENDPOINT, "5", other, {"MSFT": models["MSFT"]}, [])
    absent = BundleRef(name="fleet-models-bundle", version="4", endpoint=ENDPOINT)
    with pytest.raises(PlatformError, match="parent bundle fleet-models-bundle:4 is not registered"):
        platform.register_bundle(ENDPOINT, "5", absent, {"MSFT": models["MSFT"]}, [])
    with pytest.raises(PlatformError, match="forecast-msft version 99 is not registered"):
        platform.register_bundle(ENDPOINT, "5", None, {"MSFT": ModelRef("forecast-msft", "99")}, [])
    assert not (platform.state_dir / "bundles" / "fleet-models-bundle" / "5").exists()


def test_a_build_that_fails_midway_leaves_no_half_bundle(registry, tmp_path):
    platform, models = registry
    # A registered version whose artifacts lost their MLmodel file: copying it into the bundle fails after
    # the first ticker's model is already in the staging folder.
    broken = register_ridge(platform, "BRK.B", 6, tmp_path)
    run_id = platform.client.get_model_version(broken.name, broken.version).run_id
    artifacts = Path(platform.client.get_run(run_id).info.artifact_uri.removeprefix("file://"))
    (artifacts / "model" / "MLmodel").unlink()
    with pytest.raises(PlatformError, match="fleet-models-bundle:7 was not built: .*no MLmodel"):
        platform.register_bundle(ENDPOINT, "7", None, {"MSFT": models["MSFT"], "BRK.B": broken}, [])
    root = platform.state_dir / "bundles" / "fleet-models-bundle"
    assert not (root / "7").exists()
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]
