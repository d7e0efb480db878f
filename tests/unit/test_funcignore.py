"""The Function App package: `func azure functionapp publish` zips the project folder minus what
.funcignore excludes (gitignore syntax). This builds the same file list, walking the folder as Core
Tools does and pruning ignored directories, and checks what is in and out, then imports function_app
from a copy of exactly that list."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Rule:
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool


def _glob_to_regex(glob: str) -> str:
    out, i = "", 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif glob.startswith("/**", i) and i + 3 == len(glob):
            out, i = out + "/.*", i + 3
        elif glob[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif glob[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(glob[i]), i + 1
    return out


def parse_ignore(text: str) -> list[Rule]:
    """gitignore rules: `!` negates, a trailing `/` matches directories only, a `/` elsewhere anchors the
    pattern at the root, otherwise it matches a name at any depth; `*` stays within one name."""
    rules = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line[1:] if negate else line
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        anchored = "/" in line
        body = _glob_to_regex(line.lstrip("/"))
        regex = re.compile(("^" if anchored else "^(?:.*/)?") + body + "$")
        rules.append(Rule(regex, negate, dir_only))
    return rules


def is_ignored(rules: list[Rule], path: str, is_dir: bool) -> bool:
    ignored = False
    for rule in rules:  # the last matching rule wins
        if (is_dir or not rule.dir_only) and rule.regex.match(path):
            ignored = not rule.negate
    return ignored


def publish_list(root: Path) -> set[str]:
    """Every file the publish package would hold (paths relative to root, with `/`)."""
    rules = parse_ignore((root / ".funcignore").read_text())
    files: set[str] = set()
    for here, dirs, names in os.walk(root):
        rel = Path(here).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        dirs[:] = [d for d in dirs if not is_ignored(rules, prefix + d, is_dir=True)]
        files.update(prefix + n for n in names if not is_ignored(rules, prefix + n, is_dir=False))
    return files


def test_the_matcher_follows_gitignore_rules():
    rules = parse_ignore("tests/\n*.pyc\nretrain/local/\n!keep.pyc\n/top.txt\n")
    assert is_ignored(rules, "tests", is_dir=True)
    assert not is_ignored(rules, "tests", is_dir=False)  # dir-only rule
    assert is_ignored(rules, "retrain/x/__init__.pyc", is_dir=False)  # a name at any depth
    assert not is_ignored(rules, "keep.pyc", is_dir=False)  # negated later
    assert is_ignored(rules, "retrain/local", is_dir=True)
    assert not is_ignored(rules, "x/retrain/local", is_dir=True)  # anchored at the root
    assert is_ignored(rules, "top.txt", is_dir=False) and not is_ignored(rules, "a/top.txt", is_dir=False)


def test_the_package_holds_the_app_and_the_code_it_uploads_and_nothing_else():
    files = publish_list(REPO)
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    tracked = {f for f in listed if (REPO / f).is_file()}  # the project's files, not its .gitignored ones
    # In: the Functions entry point, host config, the Function App's requirements, the core package,
    # and the trainer and scorer folders that the app uploads to Azure ML at run time.
    for needed in ("function_app.py", "host.json", "requirements.txt"):
        assert needed in files
    for folder in ("retrain", "trainer", "trainers", "trainer_kit", "scorer"):
        wanted = {f for f in tracked if f.startswith(folder + "/") and not f.startswith("retrain/local/")}
        assert wanted <= files, sorted(wanted - files)
    assert "trainer/environment.yml" in files and "scorer/score.py" in files
    assert "retrain/azureml/platform.py" in files
    # Out: environments, state, caches, tests, benchmarks, docs, infra, the local host and platform.
    for excluded in (".venv/", ".retrain/", "tests/", "bench/", "docs/", "infra/", "functions_host/",
                     "retrain/local/", ".git", "tools/", ".ci/"):  # fmt: skip
        assert not any(f.startswith(excluded) for f in files), excluded
    assert not any("__pycache__/" in f or f.endswith(".pyc") for f in files)
    assert "local.settings.json" not in files and "constraints.txt" not in files
    # Nothing .gitignored slips in (local state, a model dump): the package is project files only.
    assert files <= tracked, sorted(files - tracked)


def test_function_app_imports_from_the_package_alone(tmp_path):
    for rel in publish_list(REPO):
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import function_app, retrain; "
        "assert retrain.__file__.startswith(sys.argv[1]), retrain.__file__; "
        "from retrain.azureml import platform; "
        "heavy = {'torch', 'lightning', 'mlflow'} & set(sys.modules); assert not heavy, heavy"
    )
    env = {**os.environ, "RETRAIN_PLATFORM": "azureml"}
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
