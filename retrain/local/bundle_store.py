"""Model bundles on the local platform (ports.MLPlatform): each version a folder

    <state>/bundles/<bundle name>/<version>/{bundle.json, models/<ticker folder>/...}

built by `retrain.bundles.build_bundle` from the parent version's folder and each changed model's MLflow
model folder in the local artifact store (hard links: a new version costs directory entries). A slot that
deploys a bundle serves this folder itself (`AZUREML_MODEL_DIR`); nothing modifies it afterwards.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from retrain.bundle_registry import bundle_entry, bundle_ref, check_request, same_or_refuse
from retrain.bundles import MANIFEST_FILE, BundleError, build_bundle, read_manifest
from retrain.local.endpoint.routing import validate_endpoint_name
from retrain.naming import bundle_name
from retrain.ports import BundleRef, ModelRef, PlatformError

BUNDLES_DIR = "bundles"


def bundle_folder(state_dir: Path, name: str, version: str) -> Path:
    """Where version `version` of bundle `name` lives under the state dir (it may not exist)."""
    if not version.isdigit() or "/" in name or name.startswith("."):
        raise PlatformError(f"bundle {name}:{version} is not a bundle reference (name, digits)")
    return Path(state_dir) / BUNDLES_DIR / name / version


class LocalBundles:
    """register_bundle / get_bundle under `<state>/bundles/`. `model_source(model)` is a context manager
    yielding the registered model version's MLflow model folder and its registry tags (the artifact
    store's own folder where it is local, else a temporary download)."""

    def __init__(
        self,
        state_dir: Path,
        model_source: Callable[[ModelRef], contextlib.AbstractContextManager[tuple[Path, dict[str, str]]]],
        lock: Callable[[str], contextlib.AbstractContextManager[None]],
    ) -> None:
        self.state_dir = Path(state_dir)
        self._model_source = model_source
        self._lock = lock

    def register_bundle(
        self,
        endpoint: str,
        version: str,
        parent: BundleRef | None,
        changes: dict[str, ModelRef],
        orchestration_ids: list[str],
        removed: list[str] | None = None,
    ) -> BundleRef:
        validate_endpoint_name(endpoint)
        name, changes, gone = check_request(endpoint, version, parent, changes, removed)
        target = bundle_folder(self.state_dir, name, version)
        with self._lock(f"bundle-{name}"):
            if (target / MANIFEST_FILE).is_file():
                return same_or_refuse(self._read(target), parent, changes, gone)
            parent_dir = None
            if parent is not None:
                parent_dir = bundle_folder(self.state_dir, name, parent.version)
                if not (parent_dir / MANIFEST_FILE).is_file():
                    raise PlatformError(
                        f"parent bundle {name}:{parent.version} is not registered here; register it first "
                        "(or pass None for the first bundle)"
                    )
            with contextlib.ExitStack() as stack:
                entries = {}
                for ticker, model in changes.items():
                    folder, tags = stack.enter_context(self._model_source(model))
                    entries[ticker] = (folder, bundle_entry(model, tags))
                try:
                    manifest = build_bundle(
                        target,
                        parent_dir,
                        entries,
                        name=name,
                        version=version,
                        endpoint=endpoint,
                        orchestration_ids=orchestration_ids,
                        removed=gone,
                    )
                except (BundleError, OSError) as exc:  # build_bundle removed its staging folder
                    raise PlatformError(f"bundle {name}:{version} was not built: {exc}") from exc
        return bundle_ref(manifest)

    def get_bundle(self, endpoint: str, version: str) -> BundleRef | None:
        validate_endpoint_name(endpoint)
        target = bundle_folder(self.state_dir, bundle_name(endpoint), str(version))
        if not (target / MANIFEST_FILE).is_file():
            return None
        return self._read(target)

    @staticmethod
    def _read(folder: Path) -> BundleRef:
        try:
            return bundle_ref(read_manifest(folder))
        except BundleError as exc:
            raise PlatformError(
                f"the bundle in {folder} is unreadable ({exc}); it was modified after it was built: "
                "restore it from a backup or register a new version"
            ) from exc


def local_artifact_dir(artifact_uri: str) -> Path | None:
    """A run's artifact folder when its artifact URI is on this file system, else None."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme not in ("", "file") or parsed.netloc not in ("", "localhost"):
        return None
    return Path(url2pathname(parsed.path))


@contextlib.contextmanager
def temporary_download(parent: Path, fetch: Callable[[Path], None]) -> Iterator[Path]:
    """A temporary folder under `parent` that `fetch` fills, removed afterwards (models whose artifacts
    are not on this file system: they are copied into the bundle, then the download goes)."""
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".download-", dir=parent))
    try:
        fetch(folder)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
