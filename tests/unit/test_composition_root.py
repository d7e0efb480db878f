"""The composition root (`retrain.adapters`): the platform, the served ledger and the forecast log are
chosen in one place from RETRAIN_PLATFORM, and a test swaps them there (`use`), not inside the modules
that call them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from retrain import adapters
from retrain.monitoring.forecast_log import ForecastLog, SqliteForecastLog
from retrain.monitoring.ledger import ServedLedger, SqliteLedger
from retrain.settings import SettingsError
from tests.integration.memory_platform import MemoryPlatform

REPO = Path(__file__).resolve().parents[2]


def test_local_stores_are_the_state_dirs_sqlite_files(tmp_path: Path) -> None:
    env = {"RETRAIN_PLATFORM": "local", "RETRAIN_STATE_DIR": str(tmp_path)}
    ledger, log = adapters.get_ledger(env), adapters.get_forecast_log(env)
    assert isinstance(ledger, SqliteLedger) and ledger.path == tmp_path / "monitoring" / "ledger.sqlite"
    assert isinstance(log, SqliteForecastLog) and log.path == tmp_path / "monitoring" / "monitor.sqlite"
    # A factory platform (the in-memory one of the tests) keeps the local stores.
    factory = {**env, "RETRAIN_PLATFORM": "tests.integration.memory_platform:shared"}
    assert isinstance(adapters.get_ledger(factory), SqliteLedger)
    assert isinstance(adapters.get_platform(factory), MemoryPlatform)
    assert adapters.get_platform(factory) is adapters.get_platform(factory)  # one per process
    adapters.reset()


@pytest.mark.parametrize(
    "choice, says",
    [("aws", "use local, azureml or package.module:factory"), ("tests.nowhere:x", "cannot load 'x'")],
)
def test_a_platform_that_cannot_be_built_says_what_to_set(tmp_path: Path, choice: str, says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        adapters.get_platform({"RETRAIN_PLATFORM": choice, "RETRAIN_STATE_DIR": str(tmp_path)})


def test_use_swaps_the_adapters_for_the_block_then_restores_them(tmp_path: Path) -> None:
    env = {"RETRAIN_PLATFORM": "local", "RETRAIN_STATE_DIR": str(tmp_path)}
    platform = MemoryPlatform()
    ledger = SqliteLedger(tmp_path / "other-ledger.sqlite")
    log = SqliteForecastLog(tmp_path / "other-monitor.sqlite")
    with adapters.use(platform=platform, ledger=ledger):
        assert adapters.get_platform(env) is platform and adapters.get_ledger(env) is ledger
        assert isinstance(adapters.get_forecast_log(env), SqliteForecastLog)  # not given: chosen as usual
        with adapters.use(forecast_log=log):
            assert adapters.get_forecast_log(env) is log and adapters.get_ledger(env) is ledger
        assert adapters.get_forecast_log(env) is not log
    assert adapters.get_ledger(env) is not ledger
    assert isinstance(ledger, ServedLedger) and isinstance(log, ForecastLog)


def _parse(path: Path) -> ast.Module:
    try:
        return ast.parse(path.read_text(), str(path))
    except SystemError:  # CPython 3.11's spurious recursion-depth SystemError (python/cpython#106905)
        return ast.parse(path.read_text(), str(path))


def test_only_the_composition_root_reads_the_platform_setting() -> None:
    readers = [
        str(path.relative_to(REPO))
        for path in [*sorted((REPO / "retrain").rglob("*.py")), REPO / "function_app.py"]
        if path.name != "settings.py"
        and any(
            isinstance(node, ast.Constant) and node.value == "RETRAIN_PLATFORM"
            for node in ast.walk(_parse(path))
        )
    ]
    assert readers == ["retrain/adapters.py"]
