"""bench/bench_policies.py on a short ridge span: it runs `retrain backtest` per configuration and writes the
figures block with the settings it ran with (through `--write-readme --readme`, the old names of
`--write-figures --figures-file`, which must keep working)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import bench_policies
from bench.readme_figures import check_block, parse_blocks


def test_writes_the_backtest_block_through_the_real_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- figures:backtest-ridge -->\n<!-- /figures:backtest-ridge -->\nafter\n")
    argv = [
        "--trainer", "ridge", "--tickers", "MSFT", "--start", "2010-01-04", "--end", "2010-12-31",
        "--policies", "never,weekly", "--workers", "1", "--write-readme", "--readme", str(readme),
    ]  # fmt: skip

    assert bench_policies.main(argv) == 0

    printed = capsys.readouterr().out
    (block,) = parse_blocks(readme.read_text())
    assert block.command.startswith("bench/bench_policies.py --trainer ridge --tickers MSFT")
    assert block.markdown in printed  # the block is what the script printed
    rows = [line for line in block.markdown.splitlines() if line.startswith("| `")]
    # one row per (policy, configuration) in each of the two tables
    assert len(rows) == 2 * 2 * len(bench_policies.CONFIGURATIONS)
    weekly = next(r for r in rows if r.startswith("| `weekly` | default |"))
    assert int(weekly.split("|")[6]) > 40  # a year of weekly trainings, through the live gate
    assert "distinct fits" in block.markdown and "1 in 20" in block.markdown
    settings = block.settings
    assert settings["tickers"] == ["MSFT"] and settings["policies"] == ["never", "weekly"]
    assert settings["trainer"] == "ridge" and settings["errors"] == "relative to the previous close"
    assert settings["RETRAIN_MONITOR_DRIFT_THRESHOLD"] and "RETRAIN_MONITOR_SCHEDULE" not in settings
    # A short span is not the default backtest: the figures check says which settings differ.
    problems = check_block(block)
    assert {p.split(":")[1].split("=")[0].strip() for p in problems} == {
        "tickers",
        "start",
        "end",
        "policies",
    }
