"""The figures of the README and docs/ are generated: every figures block names a real command, records
settings that are still the defaults and sits in the file its script writes; no table of figures sits
outside a block in the sections that hold figures.

Rules (bench/readme_figures.py): `RETRAIN_*` settings against `retrain.settings`' declared defaults; other
settings against `DEFAULT_SETTINGS(block)` of the script the block's command names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench import readme_figures
from bench.readme_figures import FiguresBlock, FiguresError, check_block, parse_blocks, write_block

REPO = readme_figures.REPO
TEXTS = {
    path.relative_to(REPO).as_posix(): path.read_text(encoding="utf-8")
    for path in readme_figures.figure_files()
}
FILE_OF = {block.name: name for name, text in TEXTS.items() for block in parse_blocks(text)}
BLOCKS = [block for text in TEXTS.values() for block in parse_blocks(text)]

# Blocks whose figures are known to be stale (the test xfails them until they are regenerated); none now.
STALE: dict[str, str] = {}

# Per file, the sections whose tables are figures (backtest results, monitor calibration, scoring): a
# heading, or a bold paragraph lead (the region then also ends at the next bold lead).
FIGURE_SECTIONS = {
    "README.md": ("**Fleet serving**", "**Fleet cycles**"),
    "docs/backtest.md": ("## Results: ",),
    "docs/monitoring.md": ("## Figures: false alarms",),
    "docs/benchmarks.md": ("**Scoring**",),
    "docs/azure.md": ("### Serving many tickers", "### Training many tickers"),
}


def _stale(name: str) -> pytest.MarkDecorator | tuple[()]:
    if name not in STALE:
        return ()
    return pytest.mark.xfail(strict=False, reason=f"{STALE[name]}; the lead regenerates it (issue 18)")


def test_the_docs_have_the_blocks_the_scripts_write() -> None:
    names = {b.name for b in BLOCKS}
    assert {
        "backtest-lstm",
        "backtest-ridge",
        "scoring",
        "monitor-false-alarms",
        "azure-serving-costs",
        "fleet-serving",
        "fleet-cycles",
    } <= names
    assert names >= set(STALE)  # a regenerated or renamed block leaves STALE
    assert len(names) == len(BLOCKS)  # a name once across README.md and docs/


@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_every_block_sits_in_the_file_its_script_writes(block: FiguresBlock) -> None:
    script = readme_figures.script_of(block.command)
    assert script is not None
    written = readme_figures._load_script(script).FIGURES_FILE
    assert FILE_OF[block.name] == written.relative_to(REPO).as_posix()


@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_every_block_names_a_command_that_exists(block: FiguresBlock) -> None:
    assert readme_figures.command_problems(block) == []


@pytest.mark.parametrize("block", [pytest.param(b, marks=_stale(b.name), id=b.name) for b in BLOCKS])
def test_every_blocks_recorded_settings_are_the_current_defaults(block: FiguresBlock) -> None:
    assert check_block(block) == []


def _sections(name: str, text: str) -> dict[str, list[tuple[int, str]]]:
    """The lines of each figures section of file `name`: from its start to the next heading (or bold lead)."""
    lines = text.split("\n")
    found: dict[str, list[tuple[int, str]]] = {}
    for start in FIGURE_SECTIONS.get(name, ()):
        first = next((i for i, line in enumerate(lines) if line.startswith(start)), None)
        assert first is not None, f"{name}: section {start!r} is gone; update FIGURE_SECTIONS"
        region = []
        for i in range(first + 1, len(lines)):
            if lines[i].startswith("#") or (start.startswith("**") and lines[i].startswith("**")):
                break
            region.append((i, lines[i]))
        found[start] = region
    return found


def _tables_outside_blocks(name: str, text: str) -> list[str]:
    spans = [(m.start(), m.end()) for m in readme_figures.BLOCK.finditer(text)]
    offsets = [0]
    for line in text.split("\n"):
        offsets.append(offsets[-1] + len(line) + 1)
    loose = []
    for start, region in _sections(name, text).items():
        for i, line in region:
            if re.match(r"^\|(\s*:?-+:?\s*\|)+\s*$", line):  # a table's separator row
                inside = any(a <= offsets[i] < b for a, b in spans)
                if not inside:
                    loose.append(
                        f"{name} {start!r}: the table above line {i + 1} is typed, not in a figures block"
                    )
    return loose


def test_every_figures_section_names_a_file_that_exists() -> None:
    assert set(FIGURE_SECTIONS) <= set(TEXTS)


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_no_figures_table_sits_outside_a_block(name: str) -> None:
    assert _tables_outside_blocks(name, TEXTS[name]) == []


def test_a_typed_table_in_a_figures_section_is_found() -> None:
    name = FILE_OF["scoring"]
    typed = TEXTS[name].replace("<!-- figures:scoring -->\n", "").replace("<!-- /figures:scoring -->\n", "")
    assert any("**Scoring**" in problem for problem in _tables_outside_blocks(name, typed))


def _block(
    settings: dict[str, object], command: str = "bench/bench_policies.py --trainer ridge"
) -> FiguresBlock:
    return FiguresBlock("backtest-ridge", command, "2026-11-28 10:00", "x (2 cores)", settings, "| a |")


def test_the_check_flags_a_setting_that_is_no_longer_the_default() -> None:
    from retrain.settings import get

    assert get("RETRAIN_GATE_ALPHA", {}) == "0.05"
    problems = check_block(_block({"RETRAIN_GATE_ALPHA": "0.1"}))
    assert any("RETRAIN_GATE_ALPHA='0.1', but its default is now '0.05'" in p for p in problems)
    assert any("not a setting" in p for p in check_block(_block({"RETRAIN_NO_SUCH": "1"})))


def test_the_check_compares_other_settings_with_the_scripts_defaults() -> None:
    from bench import bench_policies

    current = bench_policies.DEFAULT_SETTINGS("backtest-ridge")
    assert check_block(_block(current)) == []
    assert any("tickers" in p for p in check_block(_block({**current, "tickers": ["MSFT"]})))
    missing = {k: v for k, v in current.items() if k != "policies"}
    assert any("now declares policies" in p for p in check_block(_block(missing)))
    assert any("does not exist" in p for p in check_block(_block(current, "bench/bench_gone.py")))
    assert any("no script" in p for p in check_block(_block(current, "make bench")))
    assert check_block(_block({"RETRAIN_GATE_ALPHA": "0.05"}, "retrain backtest")) == []
    assert any("not a retrain command" in p for p in check_block(_block({}, "retrain gone")))


def test_write_block_replaces_the_block_only_and_records_command_date_machine_settings(
    tmp_path: Path,
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- figures:demo -->\nold\n<!-- /figures:demo -->\noutro\n", encoding="utf-8")

    write_block(readme, "demo", "| x |\n|---|\n| 1 |", {"b": 2, "a": [1]}, "bench/demo.py --write-readme")

    text = readme.read_text(encoding="utf-8")
    assert text.startswith("intro\n<!-- figures:demo -->\nGenerated by `bench/demo.py --write-readme` on ")
    assert text.endswith("| 1 |\n<!-- /figures:demo -->\noutro\n") and "old" not in text
    (block,) = parse_blocks(text)
    assert block.settings == {"a": [1], "b": 2} and block.markdown == "| x |\n|---|\n| 1 |"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", block.date) and "cores)" in block.machine
    assert '<!-- settings: {"a": [1], "b": 2} -->' in text  # sorted keys
    assert json.loads(text.split("<!-- settings: ")[1].split(" -->")[0]) == {"a": [1], "b": 2}
    assert not list(tmp_path.glob("*.tmp"))


def test_write_block_refuses_a_missing_block_with_what_to_add(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("no blocks here\n", encoding="utf-8")
    with pytest.raises(FiguresError, match="<!-- figures:demo -->"):
        write_block(readme, "demo", "| x |", {}, "bench/demo.py")
    assert readme.read_text(encoding="utf-8") == "no blocks here\n"


def test_bench_scoring_writes_the_rows_the_readme_block_has() -> None:
    import argparse

    from bench import bench_scoring

    sequential = {(key, client): [(1.0, 2.0, 3.0)] * 3 for key, client, _ in bench_scoring.README_ROWS}
    concurrency = {
        (name, c): [(600.0, 25.0, 40.0, 0.0)] * 3 for name in bench_scoring.README_TARGETS for c in (16, 64)
    }
    held = {"slot direct (azmlinfsrv)": [0.0014] * 3, "slot, sync worker": [2.005] * 3}
    args = bench_scoring.build_parser().parse_args([])
    generated = bench_scoring.readme_markdown(sequential, concurrency, held, args, worker_boots=1)

    (block,) = [b for b in BLOCKS if b.name == "scoring"]

    def rows(markdown: str) -> list[tuple[str, ...]]:
        return [
            tuple(c.strip() for c in line.split("|")[1:3])
            for line in markdown.splitlines()
            if line.startswith("| ")
        ]

    assert rows(generated) == rows(block.markdown)
    assert "1.4 / 1.4 / 1.4 ms on the slot, 2005 / 2005 / 2005 ms" in generated
    assert block.settings == bench_scoring.settings_of(argparse.Namespace(**vars(args)))
