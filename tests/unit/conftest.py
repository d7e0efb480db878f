"""Fixtures of the unit tier (fast: no host, no training)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import Receiver


@pytest.fixture
def receiver_factory() -> Iterator:
    started: list[Receiver] = []

    def make(statuses: list[int]) -> Receiver:
        started.append(Receiver(statuses))
        return started[-1]

    yield make
    for r in started:
        r.stop()
