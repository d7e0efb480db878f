"""The end-to-end tier: real `retrain` processes on 127.0.0.1 (training, the host, the scoring slots).
Every test here is marked `slow`; the helpers that start and stop processes by PID are in tests/helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.slow)
