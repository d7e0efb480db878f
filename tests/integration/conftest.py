"""Fixtures of the integration tier: the local Functions host serving function_app.py, on the in-memory
ML platform (`memory`), on a fresh state dir per test."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from functions_host.host import LocalHost
from retrain import adapters, naming
from retrain.settings import declared_defaults
from tests.helpers import REPO
from tests.integration.memory_platform import MemoryPlatform, shared


@pytest.fixture
def memory() -> MemoryPlatform:
    return shared()


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memory: MemoryPlatform):
    env = {
        "RETRAIN_PLATFORM": "tests.integration.memory_platform:shared",
        "RETRAIN_STATE_DIR": str(tmp_path),
        "RETRAIN_SCHEDULE": "0 0 1 * * Mon",
        "RETRAIN_TICKERS": "MSFT",
        "RETRAIN_SOURCE": "sample",
        "RETRAIN_LOOKBACK_DAYS": "900",
        "RETRAIN_JOB_POLL_MINUTES": "1",
        "RETRAIN_CANARY_PERCENT": "10",
        "RETRAIN_KEEP_OLD_SLOT": "false",
        # A layout users may choose, one endpoint per ticker (msft-forecast); the rollout tests run on the
        # default (shared: fleet-models) through the `shared_endpoint` fixture.
        "RETRAIN_ENDPOINTS": "per-ticker",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("RETRAIN_FUNCTION_KEY", "RETRAIN_SYSTEM_KEY", "RETRAIN_SMOKE_MAX_LATENCY_MS"):
        monkeypatch.delenv(key, raising=False)
    adapters.reset()
    local = LocalHost(
        REPO / "function_app.py",
        tmp_path,
        port=0,
        timers=False,
        out=io.StringIO(),
        setting_defaults=declared_defaults(),
    )
    local.start()
    memory.reset(host_url=local.url, system_key=local.system_key)
    try:
        yield local
    finally:
        local.stop()
        adapters.reset()


@pytest.fixture
def shared_endpoint(host: LocalHost, monkeypatch: pytest.MonkeyPatch) -> str:
    """The default layout (RETRAIN_ENDPOINTS=shared) on `host`: every ticker on one endpoint, whose name
    this returns; a cycle reads the setting when it starts."""
    monkeypatch.setenv("RETRAIN_ENDPOINTS", "shared")
    return naming.group_endpoint_name(naming.SHARED_GROUP, "")
