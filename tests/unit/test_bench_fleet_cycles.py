"""bench/bench_fleet_cycles.py's plumbing: its settings and figures block follow bench/readme_figures.py's
rules, --quick and bad values resolve as documented, and the table says per row what it measured: the
targets met or missed, the N separate requests' (a fleet of one each) extrapolation marked, whether the overhead per ticker falls with N
(no host started here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import bench_fleet_cycles as bench
from bench.readme_figures import FiguresBlock, check_block, parse_blocks, write_block


def _args(*argv: str):
    return bench.build_parser().parse_args(list(argv))


def test_the_recorded_settings_pass_the_figures_check_and_the_command_reproduces_them() -> None:
    settings = bench.settings_of(_args())
    assert settings["sizes"] == [10, 100, 200] and settings["large"] == 1000 and settings["lstm"] == 200
    assert settings["RETRAIN_TRAINING_BATCH"] == "50"  # checked against retrain.settings' default
    block = FiguresBlock(
        bench.BLOCK, bench.command_of(_args()), "2026-12-06 10:00", "x (2 cores)", settings, "x"
    )
    assert block.command == "bench/bench_fleet_cycles.py" and check_block(block) == []
    quick = bench.settings_of(_args("--quick"))
    assert (quick["sizes"], quick["large"], quick["lstm"]) == (bench.QUICK["sizes"], 0, 0)
    assert check_block(FiguresBlock(bench.BLOCK, "bench/bench_fleet_cycles.py --quick", "d", "m", quick, "x"))
    assert bench.command_of(_args("--runs", "1", "--lstm", "0", "--keep")) == (
        "bench/bench_fleet_cycles.py --runs 1 --lstm 0"
    )


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--sizes", "0", "5"], "whole numbers >= 1"),
        (["--runs", "0"], "--runs: send a whole number >= 1"),
        (["--large", "-1"], "--large: send a whole number >= 0"),
    ],
)
def test_bad_values_are_refused_saying_what_to_send(argv: list[str], said: str) -> None:
    with pytest.raises(ValueError, match=said):
        bench.resolved(_args(*argv))


def _fleet(n: int, wall: float, trainer: str = "ridge", mode: str = "fleet") -> bench.Measured:
    history = {"fleet": {"events": 24, "bytes": 3e4, "replayed_bytes": 2e5, "scheduler_s": 0.1}}
    return bench.Measured(
        mode, trainer, n, wall, 0.01 * n, n, 1, (1.0, 2.0), {"batches": wall}, {}, 1, history
    )


def test_the_table_marks_targets_the_extrapolation_and_whether_the_overhead_falls() -> None:
    measured = [
        *(_fleet(10, w) for w in (30.0, 20.0, 40.0)),  # a median of three runs: 30 s
        _fleet(200, 170.0),
        _fleet(1000, 700.0),
        _fleet(200, 500.0, "lstm"),
        _fleet(10, 80.0, mode="per-ticker"),
    ]
    md = bench.markdown(measured, _args("--sizes", "10", "200"))
    assert "| one fleet (ours) | ridge | 10 | 3 | 30.0 | 3.00 |" in md
    assert "| ridge | 200 |" in md and "<= 3 min: met" in md
    assert "<= 10 min: **missed**" in md  # 1,000 ridge tickers in 700 s
    assert "| one fleet (ours) | lstm | 200 | 1 | 500.0 |" in md and "<= 10 min: met" in md
    assert "| a fleet of one per ticker, all at once (N requests) | ridge | 10 | 1 | 80.0 | 8.00 |" in md
    assert "N = 10 only" in md and "8.00 s per ticker; ours at the same N: 3.00 s" in md
    assert "**extrapolated**, 26.7 min for 200" in md
    assert "it falls as N grows" in md
    assert "does **not** fall" in bench.markdown([_fleet(10, 10.0), _fleet(100, 200.0)], _args())
    assert "| one fleet | ridge | 10 | 24 / 30 / 0.2 | - | - |" in md
    assert "| a fleet of one per ticker | ridge | 10 | 24 / 30 / 0.2 | - | - |" in md  # its largest fleet


def test_write_figures_adds_the_block_once_after_fleet_servings_and_it_reads_back(tmp_path: Path) -> None:
    doc = tmp_path / "README.md"
    doc.write_text("# R\n\n<!-- figures:fleet-serving -->\n<!-- /figures:fleet-serving -->\n\n## Next\n")
    write_block(doc, "fleet-serving", "| s |", {}, "bench/bench_fleet_serving.py")
    for _ in range(2):
        bench.ensure_block(doc)
        write_block(doc, bench.BLOCK, "| t |", bench.settings_of(_args()), bench.command_of(_args()))
    text = doc.read_text()
    assert (
        text.index("<!-- /figures:fleet-serving -->") < text.index("**Fleet cycles**") < text.index("## Next")
    )
    block = parse_blocks(text)[-1]
    assert block.name == bench.BLOCK and block.markdown == "| t |" and check_block(block) == []
    assert bench.FIGURES_FILE.name == "README.md"
