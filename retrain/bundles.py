"""Model bundles: the immutable, versioned artefact one deployment serves for many tickers.

A bundle is a folder (the contract is docs/bundles.md):

    bundle.json          the manifest: identity, parent, what changed, and per ticker the model's
                         name, version, family, fitted-data end and folder
    models/<folder>/     one MLflow model folder per ticker, exactly as the registry holds it

Bundle k+1 is bundle k with the changed tickers replaced (`build_bundle`). Pure file I/O: no platform
calls, no clock unless `created` is left out. The scorer (scorer/score.py) reads the same manifest with
its own code (it imports nothing from retrain) and only follows each entry's `path`.

Files are hard-linked from the parent bundle and from the changed models where the file system allows
(a bundle and a registered model version are never modified in place, so sharing their bytes is safe
and a 200-ticker bundle costs directory entries, not copies); across file systems or where links are
refused, they are copied.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from retrain.naming import NamingError, azure_slug, validate_ticker

BUNDLE_FORMAT = "retrain-bundle/1"
MANIFEST_FILE = "bundle.json"
MODELS_DIR = "models"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")


class BundleError(ValueError):
    """A bundle (or a request to build one) that breaks the contract; the message says what to fix."""


@dataclass(frozen=True)
class BundleEntry:
    """One ticker's model in a bundle. `path` is relative to the bundle folder (`models/<folder>`);
    `build_bundle` sets it, so callers may leave it empty."""

    model_name: str
    model_version: str
    family: str
    fitted_data_end: str | None = None
    path: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "family": self.family,
            "fitted_data_end": self.fitted_data_end,
            "path": self.path,
        }


@dataclass(frozen=True)
class BundleManifest:
    name: str
    version: str
    parent_version: str | None
    endpoint: str
    changed: tuple[str, ...]
    orchestration_ids: tuple[str, ...]
    created: str
    tickers: Mapping[str, BundleEntry] = field(default_factory=dict)
    removed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Frozen all the way down: the tickers table cannot be changed behind the manifest's back.
        object.__setattr__(self, "tickers", MappingProxyType(dict(sorted(self.tickers.items()))))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "name": self.name,
            "version": self.version,
            "parent_version": self.parent_version,
            "endpoint": self.endpoint,
            "changed": list(self.changed),
            "removed": list(self.removed),
            "orchestration_ids": list(self.orchestration_ids),
            "created": self.created,
            "tickers": {t: e.to_json() for t, e in self.tickers.items()},
        }


def model_folder(ticker: str) -> str:
    """The folder name of a ticker's model under models/: letters, digits and hyphens, one-to-one over
    tickers (the lower-cased ticker when that is lossless, else `<readable>--<6 hex of its SHA-256>`:
    BRK.B and BRK-B never meet; see retrain.naming.azure_slug)."""
    return azure_slug(ticker)


# ------------------------------------------------------------------------------------------ reading


def read_manifest(folder: Path) -> BundleManifest:
    """The manifest of the bundle in `folder`, validated against the folder (see `parse_manifest`)."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(f"{folder} is not a bundle: it has no {MANIFEST_FILE}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return parse_manifest(document, folder)


def _text(document: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> str | None:
    value = document.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BundleError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value


def _tickers(values: Any, where: str, key: str) -> tuple[str, ...]:
    if not isinstance(values, list):
        raise BundleError(f"{where}: {key!r} must be a list of tickers, got {values!r}")
    return tuple(_ticker(v, f"{where}: {key!r}") for v in values)


def _ticker(value: Any, where: str) -> str:
    try:
        ticker = validate_ticker(value)
    except NamingError as exc:
        raise BundleError(f"{where}: {exc}") from None
    if ticker != value:
        raise BundleError(f"{where}: ticker {value!r} must be written canonically, as {ticker!r}")
    return ticker


def parse_manifest(document: Any, folder: Path | None = None) -> BundleManifest:
    """A decoded bundle.json -> BundleManifest. Checks the format, the identity, every ticker, and (with
    `folder`) that every entry's path is a folder inside the bundle holding an MLmodel file."""
    where = str(Path(folder) / MANIFEST_FILE) if folder is not None else MANIFEST_FILE
    if not isinstance(document, dict):
        raise BundleError(f"{where} must hold a JSON object")
    if document.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{where}: 'format' is {document.get('format')!r}; this code reads {BUNDLE_FORMAT!r}"
        )
    raw_tickers = document.get("tickers")
    if not isinstance(raw_tickers, dict) or not raw_tickers:
        raise BundleError(f"{where}: 'tickers' must be a non-empty object {{ticker: entry}}")
    entries: dict[str, BundleEntry] = {}
    for key, raw in raw_tickers.items():
        ticker = _ticker(key, f"{where}: 'tickers'")
        here = f"{where}: tickers[{ticker!r}]"
        if not isinstance(raw, dict):
            raise BundleError(f"{here} must be an object")
        fitted = _text(raw, "fitted_data_end", here, optional=True)
        if fitted is not None and not _DATE.match(fitted):
            raise BundleError(f"{here}: 'fitted_data_end' must be YYYY-MM-DD, got {fitted!r}")
        entry = BundleEntry(
            model_name=str(_text(raw, "model_name", here)),
            model_version=str(_text(raw, "model_version", here)),
            family=str(_text(raw, "family", here)),
            fitted_data_end=fitted,
            path=str(_text(raw, "path", here)),
        )
        if folder is not None:
            _check_entry_path(Path(folder), entry.path, here)
        entries[ticker] = entry
    changed = _tickers(document.get("changed", []), where, "changed")
    removed = _tickers(document.get("removed", []), where, "removed")
    if not set(changed) <= set(entries):
        raise BundleError(f"{where}: 'changed' names {sorted(set(changed) - set(entries))} not in 'tickers'")
    if set(removed) & set(entries):
        raise BundleError(
            f"{where}: 'removed' names {sorted(set(removed) & set(entries))} still in 'tickers'"
        )
    ids = document.get("orchestration_ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise BundleError(f"{where}: 'orchestration_ids' must be a list of instance ids")
    return BundleManifest(
        name=str(_text(document, "name", where)),
        version=str(_text(document, "version", where)),
        parent_version=_text(document, "parent_version", where, optional=True),
        endpoint=str(_text(document, "endpoint", where)),
        changed=changed,
        orchestration_ids=tuple(ids),
        created=str(_text(document, "created", where)),
        tickers=entries,
        removed=removed,
    )


def _check_entry_path(folder: Path, relative: str, where: str) -> None:
    if Path(relative).is_absolute():
        raise BundleError(f"{where}: 'path' {relative!r} must be relative to the bundle folder")
    root = folder.resolve()
    target = (root / relative).resolve()
    if target == root or not target.is_relative_to(root):
        raise BundleError(f"{where}: 'path' {relative!r} leads outside the bundle folder")
    if not (target / "MLmodel").is_file():
        raise BundleError(f"{where}: 'path' {relative!r} is not an MLflow model folder (no MLmodel)")


# ------------------------------------------------------------------------------------------ writing


def _link_or_copy(src: str, dst: str) -> str:
    """Hard-link `src` to `dst`; copy where the file system refuses links (another device, no link
    support, a permission rule)."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            raise
        shutil.copy2(src, dst)
    return dst


def _copy_model(src: Path, dst: Path) -> None:
    if not (src / "MLmodel").is_file():
        raise BundleError(f"{src} is not an MLflow model folder (no MLmodel file)")
    shutil.copytree(src, dst, copy_function=_link_or_copy, symlinks=False)


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_bundle(
    out_dir: Path,
    parent: Path | None,
    changes: Mapping[str, tuple[Path, BundleEntry]],
    *,
    name: str,
    version: str,
    endpoint: str,
    orchestration_ids: Iterable[str],
    removed: Iterable[str] = (),
    created: str | None = None,
) -> BundleManifest:
    """Write bundle `version` to `out_dir`: the parent bundle's tickers (None: none), minus `removed`,
    with each ticker in `changes` served by its model folder and entry. Staged in a temporary folder
    beside `out_dir` and renamed into place, so `out_dir` is either absent or a whole bundle. An
    existing `out_dir` is refused (bundles are immutable)."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise BundleError(f"{out_dir} already exists; bundles are immutable: write a new version")
    parent_manifest = read_manifest(parent) if parent is not None else None
    if parent_manifest is not None and parent_manifest.name != name:
        raise BundleError(
            f"parent bundle {parent} is {parent_manifest.name!r}, not {name!r}; a bundle's parent is "
            "an earlier version of the same bundle"
        )
    changes = {_ticker(t, "changes"): change for t, change in changes.items()}
    removed_set = {_ticker(t, "removed") for t in removed}
    if removed_set & set(changes):
        raise BundleError(f"tickers {sorted(removed_set & set(changes))} are both changed and removed")
    inherited = dict(parent_manifest.tickers) if parent_manifest else {}
    unknown_removed = removed_set - set(inherited)
    if unknown_removed:
        raise BundleError(f"cannot remove {sorted(unknown_removed)}: the parent bundle does not hold them")
    if not changes and not removed_set:
        raise BundleError("nothing changes: give at least one ticker to replace or remove")
    for ticker in removed_set:
        del inherited[ticker]
    if not inherited and not changes:
        raise BundleError("the bundle would hold no ticker; a bundle serves at least one")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        (staging / MODELS_DIR).mkdir()
        tickers: dict[str, BundleEntry] = {}
        for ticker, entry in inherited.items():
            if ticker in changes:
                continue
            assert parent is not None  # inherited entries come from a parent
            _copy_model(Path(parent) / entry.path, staging / entry.path)
            tickers[ticker] = entry
        for ticker, (model_dir, entry) in changes.items():
            relative = f"{MODELS_DIR}/{model_folder(ticker)}"
            _copy_model(Path(model_dir), staging / relative)
            tickers[ticker] = replace(entry, path=relative)
        manifest = BundleManifest(
            name=name,
            version=str(version),
            parent_version=parent_manifest.version if parent_manifest else None,
            endpoint=endpoint,
            changed=tuple(sorted(changes)),
            orchestration_ids=tuple(orchestration_ids),
            created=created or _utc_now(),
            tickers=tickers,
            removed=tuple(sorted(removed_set)),
        )
        # Round-trip through the reader: what we write is what every reader accepts.
        document = manifest.to_json()
        parse_manifest(document, staging)
        (staging / MANIFEST_FILE).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(staging, out_dir)  # a folder rename: atomic, and refuses an existing non-empty target
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise BundleError(f"{out_dir} appeared while building; bundles are immutable") from None
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest
