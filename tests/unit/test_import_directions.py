"""Which way the imports go: the CLI (retrain/cli/) imports the library, never the other way round, and
neither the Function App nor the local host imports the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _imported_modules(path: Path) -> set[str]:
    source = path.read_text()
    try:
        tree = ast.parse(source, str(path))
    except SystemError:  # CPython 3.11's spurious recursion-depth SystemError (python/cpython#106905)
        tree = ast.parse(source, str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_library_module_imports_the_cli() -> None:
    cli = REPO / "retrain" / "cli"
    library = [
        *(p for p in sorted((REPO / "retrain").rglob("*.py")) if cli not in p.parents),
        *sorted((REPO / "functions_host").rglob("*.py")),
        REPO / "function_app.py",
    ]
    importers = {
        str(path.relative_to(REPO)): sorted(
            m for m in _imported_modules(path) if m == "retrain.cli" or m.startswith("retrain.cli.")
        )
        for path in library
        if path != REPO / "retrain" / "__main__.py"  # `python -m retrain` is the command line
    }
    assert {k: v for k, v in importers.items() if v} == {}
