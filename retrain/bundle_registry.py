"""What both adapters' `register_bundle` / `get_bundle` share (ports.MLPlatform): the request's
checks, a model version's bundle entry from its tags, the manifest as a `BundleRef`, and the rule that
makes a replayed register a no-op while a different one under an existing version is refused.

No platform calls and no file I/O: the adapters fetch models and write folders (retrain/bundles.py
builds them); this module only decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from retrain.bundles import BundleEntry, BundleManifest
from retrain.naming import NamingError, bundle_name, validate_ticker
from retrain.ports import BundleRef, ModelRef, PlatformError
from retrain.vocabulary import TAG_FITTED_DATA_END, TAG_MODEL_FAMILY, TAG_TRAINER

UNKNOWN_FAMILY = "unknown"  # a model version registered before family tags existed


def bundle_ref(manifest: BundleManifest) -> BundleRef:
    """The port's value of a bundle manifest (the per-ticker entries without their in-folder paths)."""
    return BundleRef(
        name=manifest.name,
        version=manifest.version,
        endpoint=manifest.endpoint,
        tickers={
            ticker: {
                "model_name": entry.model_name,
                "model_version": entry.model_version,
                "family": entry.family,
                "fitted_data_end": entry.fitted_data_end,
            }
            for ticker, entry in manifest.tickers.items()
        },
        parent_version=manifest.parent_version,
        changed=list(manifest.changed),
        removed=list(manifest.removed),
        orchestration_ids=list(manifest.orchestration_ids),
    )


def bundle_entry(model: ModelRef, registered_tags: Mapping[str, Any]) -> BundleEntry:
    """A changed ticker's entry: the model version and, from its registry tags, its family (the trainer's
    when no family tag is set; `unknown` for a version older than both) and fitted-data end."""
    family = registered_tags.get(TAG_MODEL_FAMILY) or registered_tags.get(TAG_TRAINER) or UNKNOWN_FAMILY
    fitted = registered_tags.get(TAG_FITTED_DATA_END)
    return BundleEntry(
        model_name=model.name,
        model_version=str(model.version),
        family=str(family),
        fitted_data_end=str(fitted) if fitted else None,
    )


def check_request(
    endpoint: str,
    version: str,
    parent: BundleRef | None,
    changes: Mapping[str, ModelRef],
    removed: list[str] | None,
) -> tuple[str, dict[str, ModelRef], list[str]]:
    """(bundle name, changes with canonical tickers, removed tickers) of a register_bundle request, or a
    PlatformError saying what to send instead."""
    name = bundle_name(endpoint)
    if not isinstance(version, str) or not version.isdigit() or version.startswith("0"):
        raise PlatformError(
            f"bundle version {version!r}: send the next whole number as a string (the parent's + 1, "
            "'1' for the first); Azure ML model versions are digits"
        )
    if parent is not None:
        if parent.name != name:
            raise PlatformError(
                f"the parent bundle is {parent.name}:{parent.version}, not a version of {name} (the bundle "
                f"of endpoint {endpoint}); pass that endpoint's current bundle, or None for the first"
            )
        if not parent.version.isdigit() or int(parent.version) >= int(version):
            raise PlatformError(
                f"bundle {name} version {version} must come after its parent version {parent.version}"
            )
    try:
        canonical = {validate_ticker(t): model for t, model in changes.items()}
        gone = [validate_ticker(t) for t in (removed or [])]
    except NamingError as exc:
        raise PlatformError(f"register_bundle: {exc}") from None
    if not canonical and not gone:
        raise PlatformError("register_bundle: nothing changes; give at least one ticker to replace or remove")
    return name, canonical, sorted(gone)


def expected_models(
    parent: BundleRef | None, changes: Mapping[str, ModelRef], removed: list[str]
) -> dict[str, tuple[str, str]]:
    """ticker -> (model name, version) a bundle built from this request serves."""
    served = {
        t: (str(e["model_name"]), str(e["model_version"]))
        for t, e in (parent.tickers if parent else {}).items()
        if t not in removed
    }
    served.update({t: (m.name, str(m.version)) for t, m in changes.items()})
    return served


def same_or_refuse(
    existing: BundleRef, parent: BundleRef | None, changes: Mapping[str, ModelRef], removed: list[str]
) -> BundleRef:
    """`existing` when it is what this request would build (a replayed activity: same parent, same model
    per ticker; the orchestration ids and build time do not count), else a PlatformError: versions are
    immutable."""
    served = {t: (str(e["model_name"]), str(e["model_version"])) for t, e in existing.tickers.items()}
    wanted = expected_models(parent, changes, removed)
    parent_version = parent.version if parent else None
    if served == wanted and existing.parent_version == parent_version:
        return existing
    differs = sorted(t for t in set(served) | set(wanted) if served.get(t) != wanted.get(t))
    why = f"tickers {differs} differ" if differs else f"its parent is {existing.parent_version}"
    raise PlatformError(
        f"bundle {existing.name} version {existing.version} already exists with other content ({why}); "
        "bundle versions are immutable: register the change as the next version"
    )
