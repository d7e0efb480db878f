"""bench/bench_fleet_serving.py's plumbing: its settings and figures block follow bench/readme_figures.py's
rules, --quick and bad sizes resolve as documented, and the table marks the per-ticker layout's
extrapolated rows and computes the ratios against the same run's reference (no endpoint started here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import bench_fleet_serving as bench
from bench.readme_figures import FiguresBlock, check_block, parse_blocks, write_block


def _args(*argv: str):
    return bench.build_parser().parse_args(list(argv))


def test_the_recorded_settings_are_the_scripts_defaults_and_pass_the_figures_check() -> None:
    settings = bench.settings_of(_args())
    assert settings == bench.DEFAULT_SETTINGS(bench.BLOCK)
    assert settings["sizes"] == [1, 50, 200] and settings["per_ticker_sizes"] == [1, 4, 8]
    block = FiguresBlock(
        bench.BLOCK, bench.command_of(_args()), "2026-12-06 10:00", "x (2 cores)", settings, "| a |"
    )
    assert block.command == "bench/bench_fleet_serving.py"
    assert check_block(block) == []
    quick = bench.settings_of(_args("--quick"))
    assert quick["sizes"] == bench.QUICK["sizes"] and quick["runs"] == 1
    assert check_block(
        FiguresBlock(bench.BLOCK, "bench/bench_fleet_serving.py --quick", "d", "m", quick, "x")
    )
    assert bench.command_of(_args("--quick", "--runs", "5", "--sizes", "1", "20")) == (
        "bench/bench_fleet_serving.py --sizes 1 20 --runs 5 --quick"
    )


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--per-ticker-sizes", "4"], "at least two different sizes"),
        (["--sizes", "0", "5"], "whole numbers >= 1"),
        (["--runs", "0"], "--runs: send a whole number >= 1"),
    ],
)
def test_bad_sizes_are_refused_saying_what_to_send(argv: list[str], said: str) -> None:
    with pytest.raises(ValueError, match=said):
        bench.resolved(_args(*argv))


def _run(scale: float) -> bench.RunResult:
    def mem(endpoints: int, tickers: int) -> bench.Memory:
        return bench.Memory(3 * endpoints, 180 * endpoints + 0.1 * tickers, 5 * endpoints, 350 * endpoints)

    return bench.RunResult(
        ours={n: mem(1, n) for n in (1, 50, 200)},
        per_ticker={n: mem(n, n) for n in (1, 4, 8)},
        p50_one_ms=1.0 * scale,
        p50_large_ms=1.1 * scale,
        p50_batch_ms=6.0,
        rollout_one_s=4.0,
        rollout_large_s=5.0 * scale,
        rollout_one_phases=(0.1, 3.4, 0.5),
        rollout_large_phases=(0.3, 4.2, 0.5),
        load_requests=1000,
        load_failures={"T000": 0, "T199": 1},
        load_tickers=["T000", "T199"],
    )


def test_the_table_marks_the_extrapolated_rows_and_takes_ratios_of_the_same_runs_medians() -> None:
    text = bench.markdown([_run(1.0), _run(1.2), _run(1.1)], _args())
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    ours_200 = next(r for r in rows if r.startswith("| one endpoint, a bundle of N (ours) | 200 |"))
    assert "| 3 | 200 | 5 | 350 | 1.11x |" in ours_200  # 180 + 0.1 * 200 MB vs 180.1 for one ticker
    extrapolated = [r for r in rows if "**extrapolated**" in r]
    assert [r.split("|")[2].strip() for r in extrapolated] == ["50", "200"]  # beyond the measured 1, 4, 8
    assert "| 600 | 36020 | 1000 | 70000 |" in extrapolated[1]  # 3, ~180.1 MB, 5 and 350 MB per ticker
    assert "3.0 processes and 180 MB PSS serving, 5.0 processes and 350 MB during a rollout" in text
    assert not any("extrapolated" in r for r in rows if r.startswith("| per-ticker | "))
    assert "| 1.21 (200 tickers) | 1.10 (one-ticker endpoint) | 1.10x | <= 1.2x |" in text
    assert "| p50 ms, a 200-instance batch request | 6.00 (200 tickers) |" in text
    assert "register 0.30 + slot 4.20 + traffic 0.50) | 4.00 (one-ticker endpoint" in text
    assert "| 1.38x | <= 1.5x |" in text  # 5.5 / 4.0
    assert "| 3 of 3000 (worst ticker 3) |" in text


def test_write_figures_adds_the_block_once_and_fills_it(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Figures\n\ntext\n", encoding="utf-8")
    for _ in range(2):
        bench.ensure_block(doc)
        write_block(
            doc, bench.BLOCK, "| a |\n|---|\n| 1 |", bench.settings_of(_args()), bench.command_of(_args())
        )
    text = doc.read_text(encoding="utf-8")
    assert text.count("**Fleet serving**") == 1
    (block,) = parse_blocks(text)
    assert block.name == "fleet-serving" and block.settings == bench.DEFAULT_SETTINGS(block.name)
    assert bench.FIGURES_FILE.name == "README.md"
