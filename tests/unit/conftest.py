"""Fixtures of the unit tier (fast: no host, no training)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from retrain.azureml.platform import AzureMLPlatform
from tests.helpers import Receiver
from tests.unit.azure_recording_transport import (
    WORKSPACE_ENV,
    ArmTransport,
    StaticTokenCredential,
    code_root,
    route_blob_uploads,
)


@pytest.fixture
def receiver_factory() -> Iterator:
    started: list[Receiver] = []

    def make(statuses: list[int]) -> Receiver:
        started.append(Receiver(statuses))
        return started[-1]

    yield make
    for r in started:
        r.stop()


@pytest.fixture()
def arm(monkeypatch: pytest.MonkeyPatch) -> ArmTransport:
    transport = ArmTransport()
    route_blob_uploads(monkeypatch, transport)
    return transport


@pytest.fixture()
def platform(arm: ArmTransport, tmp_path: Path) -> AzureMLPlatform:
    # Tiny back-off so the retry tests run fast; everything else is the production configuration.
    return AzureMLPlatform(
        environ=WORKSPACE_ENV,
        repo_root=code_root(tmp_path),
        credential=StaticTokenCredential(),
        transport=arm,
        retry_backoff_factor=0.01,
    )
