"""The port's words are spelled once: tag names live in retrain/vocabulary.py, and an optional platform
capability is a Protocol checked with isinstance, never an attribute probe."""

from __future__ import annotations

import ast
from pathlib import Path

from retrain import vocabulary
from retrain.ports import HostsEndpoints, PreparesInvoke

REPO = Path(__file__).resolve().parents[2]
# Tag names that are nothing but tag names (a payload key such as "ticker" may share a tag's spelling).
TAG_ONLY_NAMES = {
    vocabulary.TAG_INSTANCE_ID,
    vocabulary.TAG_GATE_DECISION,
    vocabulary.TAG_GATE_FORCED,
    vocabulary.TAG_GATE_REASONS,
    vocabulary.TAG_MODEL_FAMILY,
}


def _parse(path: Path) -> ast.Module:
    """ast.parse, once more on CPython 3.11's spurious "AST constructor recursion depth mismatch"
    SystemError (python/cpython#106905), which other threads of the test process can trigger."""
    source = path.read_text()
    try:
        return ast.parse(source, str(path))
    except SystemError:
        return ast.parse(source, str(path))


def _string_literals(path: Path) -> set[str]:
    tree = _parse(path)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    }


def test_no_module_but_the_vocabulary_spells_a_tag_name() -> None:
    modules = [*sorted((REPO / "retrain").rglob("*.py")), REPO / "function_app.py"]
    spelled = {
        str(path.relative_to(REPO)): sorted(_string_literals(path) & TAG_ONLY_NAMES)
        for path in modules
        if path.name != "vocabulary.py"
    }
    assert {k: v for k, v in spelled.items() if v} == {}


def test_only_the_local_platform_hosts_its_endpoints() -> None:
    from retrain.azureml.platform import AzureMLPlatform
    from retrain.local.platform import LocalPlatform

    assert issubclass(LocalPlatform, HostsEndpoints)
    assert not issubclass(AzureMLPlatform, HostsEndpoints)


def test_only_the_azure_platform_prepares_its_scoring_calls() -> None:
    from retrain.azureml.platform import AzureMLPlatform
    from retrain.local.platform import LocalPlatform

    assert issubclass(AzureMLPlatform, PreparesInvoke)
    assert not issubclass(LocalPlatform, PreparesInvoke)


def test_no_module_probes_the_platform_for_an_attribute() -> None:
    probes = [
        f"{path.relative_to(REPO)}:{node.lineno}"
        for path in sorted((REPO / "retrain").rglob("*.py"))
        for node in ast.walk(_parse(path))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("hasattr", "getattr")
        and node.args
        and isinstance(node.args[0], ast.Name)
        and node.args[0].id == "platform"
    ]
    assert probes == []
