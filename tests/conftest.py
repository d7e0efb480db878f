"""Fixtures shared across the suite: one real training run on the bundled sample, reused by every
test that needs a model (training is the slow part, so it happens once per run, shared by the xdist
workers)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
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


@contextlib.contextmanager
def _run_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path`, held until the block ends (the workers of one run take turns)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temporary directory of the whole run: under pytest-xdist, each worker's base temp is a
    `popen-gwN` folder inside it; without xdist, the base temp itself."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory, sample_csv: Path) -> Path:
    """The output directory of a short real training run: `model/`, `metrics.json`, `forecast.png`.

    Trained once per run, not once per xdist worker: the first worker to need it trains (holding a lock),
    the others wait and use the same directory. The tests only read it (the sample is the same everywhere)."""
    run_dir = _run_dir(tmp_path_factory)
    out = run_dir / "trained"
    done = run_dir / "trained.done"
    with _run_lock(run_dir / "trained.lock"):
        if not done.is_file():
            shutil.rmtree(out, ignore_errors=True)  # a worker that failed half-way: train again
            out.mkdir()
            from retrain.job_code import kit_pythonpath

            env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}"}
            env["PYTHONPATH"] = kit_pythonpath(
                env.get("PYTHONPATH")
            )  # run from its folder: the kit from the root
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
            done.touch()
    return out


@pytest.fixture
def use_adapters() -> Iterator[Callable[..., None]]:
    """`use_adapters(platform=..., ledger=..., forecast_log=...)`: the composition root hands these
    adapters to every caller of this process until the test ends (`retrain.adapters.use`)."""
    from retrain import adapters

    with contextlib.ExitStack() as stack:
        yield lambda **given: stack.enter_context(adapters.use(**given))
