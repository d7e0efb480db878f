"""The CLI user names data as the operator (issue 19 point 11): `retrain run` and `retrain monitor` read a
`csv:` path relative to the working directory (or absolute), through their in-process host, which the
same path sent by an HTTP caller could not reach (tests/unit/test_naming_data.py). Real `retrain`
processes on the local platform; each ends within seconds (no training job runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from retrain.market_data import fetch_prices
from tests.helpers import REPO, offline_env, run_retrain


def write_prices(path: Path, *, end: str, rows: int | None = None) -> Path:
    """IBM's real daily prices (the bundled sample) up to `end`, the last `rows` of them, as a CSV."""
    prices = fetch_prices("IBM", source="sample", end=end, min_rows=1)
    if rows is not None:
        prices = prices.tail(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    prices.assign(Date=pd.to_datetime(prices["Date"]).dt.strftime("%Y-%m-%d")).to_csv(path, index=False)
    return path


def test_cli_monitor_reads_a_csv_relative_to_the_working_directory(tmp_path: Path) -> None:
    # Data to 2011-12-30 only: the day 2012-01-03 is scored on it, which the sample (to 2013) would not do.
    csv = write_prices(tmp_path / "prices" / "ibm.csv", end="2011-12-30")
    done = run_retrain(
        [
            "monitor",
            "--ticker",
            "IBM",
            "--from",
            "2012-01-03",
            "--source",
            "csv:prices/ibm.csv",
            "--state-dir",
            "state",
        ],
        offline_env(PYTHONPATH=str(REPO)),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]  # main: 400 "a request may name a CSV only when ..."
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["runtime_status"] == "Completed" and summary["days"] == 1, summary
    assert f'"source": "csv:{csv}"' in done.stderr  # the host was sent the file the user named
    assert "day 2012-01-03 (data to 2011-12-30)" in done.stderr, done.stderr[-3000:]


def test_cli_run_reads_a_csv_relative_to_the_working_directory(tmp_path: Path) -> None:
    csv = write_prices(tmp_path / "prices" / "short.csv", end="2011-12-30", rows=100)
    done = run_retrain(
        [
            "run",
            "--ticker",
            "IBM",
            "--trainer",
            "ridge",
            "--source",
            "csv:prices/short.csv",
            "--state-dir",
            "state",
        ],
        offline_env(PYTHONPATH=str(REPO)),
        cwd=tmp_path,
    )
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    # The file was read (and found too short to train on): named as the absolute path of the user's file.
    # A fleet of one: the fleet completed, its one ticker failed, so `run` exits 1.
    ibm = summary["tickers"]["IBM"]
    assert done.returncode == 1 and ibm["status"] == "failed", (summary, done.stderr[-2000:])
    assert ibm["error"].startswith(f"data: CSV {csv}: 100 rows"), ibm
