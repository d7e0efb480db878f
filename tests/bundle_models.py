"""Real ridge (and gbr) MLflow models and bundles of them, for the bundle tests and bench/bench_bundle_scorer.py.

Each model is the ridge trainer's own in-process fit (`fit_closes`) saved by the kit's `save_model`:
the artefact a training job registers, made in well under a second without a job process.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from retrain.backtest.fitting import load_trainer_module
from retrain.bundles import BundleEntry, BundleManifest, build_bundle
from retrain.trainers import get_trainer

HISTORY_DAYS = 200


def closes_for(ticker: str, n: int = HISTORY_DAYS) -> np.ndarray:
    """A seeded random walk per ticker (the same ticker always gets the same prices)."""
    rng = np.random.default_rng(zlib.crc32(ticker.encode()))
    return 50.0 * np.exp(np.cumsum(rng.normal(0.0003, 0.015, n)))


def ridge_model(dest: Path, ticker: str, window: int = 10) -> Path:
    """The ridge model fitted on `closes_for(ticker)` with `window`, saved as an MLflow model at `dest`."""
    train = load_trainer_module(get_trainer("ridge"))
    fitted = train.fit_closes(closes_for(ticker), train.RidgeConfig(window=window, alpha=1.0))
    ends = {"fitted_data_end": "2026-12-04", "evaluation_fit_end": "2026-11-01"}
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    return train.FAMILY.save_model(fitted, Path(dest), ends)


def gbr_model(dest: Path, ticker: str, window: int = 10) -> Path:
    """The gbr model (a few small trees) fitted on `closes_for(ticker)`, saved as an MLflow model at `dest`."""
    train = load_trainer_module(get_trainer("gbr"))
    fitted = train.fit_closes(
        closes_for(ticker), train.GbrConfig(window=window, n_estimators=20, max_depth=2)
    )
    ends = {"fitted_data_end": "2026-12-04", "evaluation_fit_end": "2026-11-01"}
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    return train.FAMILY.save_model(fitted, Path(dest), ends)


def ridge_bundle(
    out_dir: Path, models_dir: Path, windows: dict[str, int], *, name: str = "fleet", version: str = "1"
) -> BundleManifest:
    """A first bundle (no parent) of one fresh ridge model per ticker, window per ticker."""
    models_dir.mkdir(parents=True, exist_ok=True)
    changes = {}
    for i, (ticker, window) in enumerate(windows.items()):
        model_dir = ridge_model(models_dir / f"m{i}", ticker, window)
        entry = BundleEntry(f"forecast-{ticker.lower()}", str(i + 1), "ridge", "2026-12-04")
        changes[ticker] = (model_dir, entry)
    return build_bundle(
        out_dir,
        None,
        changes,
        name=name,
        version=version,
        endpoint="forecast-fleet",
        orchestration_ids=["retrain-x"],
    )
