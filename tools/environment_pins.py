"""Print the pip requirements of Azure ML conda environment files (their `- pip:` section), one a line.

`make setup` installs exactly these pins into the local .venv, so trainer/environment.yml and
scorer/environment.yml are the single source of truth of the training and scoring environments and
any set of pins that cannot be resolved together fails the local set-up first.

Standard library only (it runs before anything is installed). Option lines such as
`--extra-index-url` are left out: the local set-up chooses its own indexes (see the Makefile).

    python tools/environment_pins.py trainer/environment.yml scorer/environment.yml
    python tools/environment_pins.py --files    # the files: every registered trainer's, then the scorer's

`--files` reads the trainer registry (retrain/trainers.py, standard library only), so a model family
registered there brings its environment into `make setup` with no other change.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[A-Za-z0-9.+!-]+$")


def pip_requirements(path: Path) -> list[str]:
    """The `name==version` entries of the pip section of a conda environment file.

    Raises ValueError when there is no pip section or an entry is not an exact pin (an environment
    must be reproducible: `pkg>=1` would resolve differently in Azure and on a laptop)."""
    lines = path.read_text().splitlines()
    pins: list[str] = []
    section_indent: int | None = None
    for number, line in enumerate(lines, start=1):
        stripped = line.split("#", 1)[0].rstrip()
        if not stripped.strip():
            continue
        indent = len(stripped) - len(stripped.lstrip())
        item = stripped.strip()
        if section_indent is None:
            if item == "- pip:":
                section_indent = indent
            continue
        if indent <= section_indent:
            break  # the pip section ended
        if not item.startswith("- "):
            raise ValueError(f"{path}:{number}: expected a '- name==version' entry, got {item!r}")
        entry = item[2:].strip()
        if entry.startswith("-"):
            continue  # a pip option (index URL): the local set-up picks its own indexes
        if not _PIN.match(entry):
            raise ValueError(f"{path}:{number}: {entry!r} is not an exact pin; write it as name==version")
        pins.append(entry)
    if section_indent is None or not pins:
        raise ValueError(f"{path}: no '- pip:' section with pinned packages under dependencies")
    return pins


REPO = Path(__file__).resolve().parents[1]


def environment_files(repo: Path = REPO) -> list[str]:
    """Every registered trainer's environment.yml (registry order), then the scorer's; relative to `repo`."""
    sys.path.insert(0, str(repo))
    try:
        from retrain.trainers import TRAINERS
    finally:
        sys.path.remove(str(repo))
    files = [f"{trainer.folder}/environment.yml" for trainer in TRAINERS.values()]
    return [*dict.fromkeys(files), "scorer/environment.yml"]


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: environment_pins.py ENVIRONMENT.yml [...] | --files", file=sys.stderr)
        return 2
    if argv == ["--files"]:
        print(" ".join(environment_files()))
        return 0
    try:
        for name in argv:
            print(f"# from {name}")
            print("\n".join(pip_requirements(Path(name))))
    except (OSError, ValueError) as exc:
        print(f"environment_pins.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
