"""Fixtures shared across the suite: one real training run on the bundled sample, reused by every
test that needs a model (training is the slow part, so it happens once per session)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def sample_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real MSFT snapshot (bundled sample data), about four years of trading days."""
    from retrain.market_data import fetch_prices, write_snapshot

    prices = fetch_prices("MSFT", source="sample", lookback_days=1500)
    return write_snapshot(prices, "MSFT", tmp_path_factory.mktemp("data")).path


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory, sample_csv: Path) -> Path:
    """The output directory of a short real training run: `model/`, `metrics.json`, `forecast.png`."""
    out = tmp_path_factory.mktemp("trained")
    from retrain.job_code import kit_pythonpath

    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}"}
    env["PYTHONPATH"] = kit_pythonpath(env.get("PYTHONPATH"))  # run from its folder: the kit from the root
    env.pop("MLFLOW_RUN_ID", None)
    subprocess.run(
        [
            sys.executable,
            str(REPO / "trainer" / "train.py"),
            "--data",
            str(sample_csv),
            "--output",
            str(out),
            "--max-epochs",
            "3",
        ],
        check=True,
        env=env,
        cwd=out,
        timeout=600,
    )
    return out


@pytest.fixture
def use_adapters() -> Iterator[Callable[..., None]]:
    """`use_adapters(platform=..., ledger=..., forecast_log=...)`: the composition root hands these
    adapters to every caller of this process until the test ends (`retrain.adapters.use`)."""
    from retrain import adapters

    with contextlib.ExitStack() as stack:
        yield lambda **given: stack.enter_context(adapters.use(**given))
