"""The README and docs/ say what is true, where a test can tell:
- every relative link resolves (README.md, docs/*.md, and the READMEs of trainer/, scorer/, infra/ and
  trainers/*): the file (or folder) exists in the repository and a `#fragment` names a heading of the
  target markdown (GitHub's anchors), so a section moved between files leaves no dead link;
- the dependency table of docs/dependencies.md names every dependency file and exactly its packages;
- every flag of every `retrain` command is in that command's row of docs/cli.md;
- docs/settings.md's table is `retrain.settings.SETTINGS`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The README, docs/ and the READMEs of the job code and the template.
DOCUMENTS = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    *(REPO / folder / "README.md" for folder in ("trainer", "scorer", "infra")),
    *sorted(REPO.glob("trainers/*/README.md")),
]

# [text](target) outside code; images too. Targets with a scheme (http:, https:, mailto:) are not files.
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def _without_code(text: str) -> str:
    """The text with fenced blocks and inline code blanked (links there are examples, not links)."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but '-' and '_' dropped, spaces to '-',
    a repeated anchor gets -1, -2, ..."""
    found: set[str] = set()
    for line in re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", markdown, flags=re.M | re.S).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def broken_links(document: Path, root: Path = REPO) -> list[str]:
    """`document: target (why)` for each relative link that does not resolve (paths relative to `root`)."""
    broken = []
    for target in LINK.findall(_without_code(document.read_text(encoding="utf-8"))):
        if SCHEME.match(target):
            continue
        path, _, fragment = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        where = f"{document.relative_to(root)}: {target}"
        if not resolved.is_relative_to(root) or not resolved.exists():
            broken.append(f"{where} (no such file in the repository)")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved.read_text("utf-8")):
            broken.append(f"{where} (no heading with anchor #{fragment} in {resolved.relative_to(root)})")
    return broken


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(document: Path) -> None:
    assert broken_links(document) == []


def test_a_broken_link_or_anchor_is_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text(
        "# Other\n\n## The `make run` command: twice\n\n## Twice\n\n## Twice\n"
    )
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Doc\n[ok](other.md) [ok](other.md#the-make-run-command-twice) [ok](other.md#twice-1) [ok](#doc)\n"
        "[gone](missing.md) [bad anchor](other.md#nowhere) [self](#nowhere-here) [web](https://x.invalid/a)\n"
        "`[code](missing-in-code.md)`\n```\n[fenced](missing-in-fence.md)\n```\n"
    )
    assert broken_links(doc, tmp_path) == [
        "doc.md: missing.md (no such file in the repository)",
        "doc.md: other.md#nowhere (no heading with anchor #nowhere in other.md)",
        "doc.md: #nowhere-here (no heading with anchor #nowhere-here in doc.md)",
    ]
    assert anchors((tmp_path / "other.md").read_text()) == {
        "other",
        "the-make-run-command-twice",
        "twice",
        "twice-1",
    }


def _names_in_file(path: Path) -> set[str]:
    """The distributions a requirements file or an Azure ML environment file pins, canonical names."""
    import sys

    from packaging.utils import canonicalize_name

    sys.path.insert(0, str(REPO / "tools"))
    from environment_pins import pip_requirements

    if path.suffix == ".yml":
        lines = pip_requirements(path)
    else:
        lines = [
            line.split("#", 1)[0].strip()
            for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith(("#", "-"))
        ]
    return {canonicalize_name(re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0]) for line in lines}


def _names_in_table_cell(cell: str) -> set[str]:
    from packaging.utils import canonicalize_name

    cell = cell.split("+", 1)[1] if cell.startswith("`requirements.txt` +") else cell
    cell = re.split(r"[.;]", cell, maxsplit=1)[0]  # the list ends at the first sentence's end
    return {canonicalize_name(name.strip(" `*")) for name in cell.split(",") if name.strip(" `*")}


def test_the_dependency_table_names_every_dependency_file_and_exactly_its_packages() -> None:
    """docs/dependencies.md's table has a row per dependency file; a registered trainer's environment may
    have its row in its own folder's README instead (a family is documented in its folder)."""
    from retrain.trainers import TRAINERS

    table = {}
    documents = [REPO / "docs" / "dependencies.md"]
    documents += [t.folder_path(REPO) / "README.md" for t in TRAINERS.values()]
    for document in documents:
        for line in (document.read_text() if document.is_file() else "").splitlines():
            m = re.match(r"^\| `([^`]+)`[^|]*\| [^|]* \| (.*) \|$", line)
            if m:
                table[m.group(1)] = _names_in_table_cell(m.group(2))
    files = {
        str(p.relative_to(REPO))
        for pattern in ("requirements*.txt", "**/environment.yml")
        for p in REPO.glob(pattern)
        if not any(part.startswith(".") for part in p.relative_to(REPO).parts)  # .venv, .retrain
    }
    assert set(table) == files  # a new dependency file gets its row
    for name in sorted(files):
        assert table[name] == _names_in_file(REPO / name), name


def test_every_cli_flag_is_in_its_commands_row_of_the_cli_doc() -> None:
    from retrain.cli import build_parser

    rows = (REPO / "docs" / "cli.md").read_text().splitlines()
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices or {}
    missing = {}
    for name, parser in commands.items():
        row = next((line for line in rows if line.startswith(f"| `retrain {name}")), "")
        flags = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
        absent = sorted(f for f in flags - {"--help", "--state-dir"} if not re.search(rf"`{f}\b", row))
        if not row or absent:
            missing[name] = absent or ["(no row)"]
    assert missing == {}


def test_the_settings_table_is_the_declared_settings() -> None:
    """docs/settings.md's table has one row per `retrain.settings.SETTINGS` entry, with its default
    and its description (backquotes and `\\|` escapes aside; a secret's row ends with "Secret.")."""
    from retrain.settings import SETTINGS

    rows = re.findall(
        r"^\| `([A-Z0-9_]+)` \| (.*?) \| (.*) \|$", (REPO / "docs" / "settings.md").read_text(), re.M
    )

    def plain(text: str) -> str:
        return text.replace("`", "").replace("\\|", "|")

    expected = {
        s.name: (
            "(none)" if s.default is None else f"`{s.default}`",
            s.description + (" Secret." if s.secret else ""),
        )
        for s in SETTINGS
    }
    documented = {name: (default, plain(description)) for name, default, description in rows}
    assert len(documented) == len(rows)  # each setting once
    assert documented == expected
