"""The slot server's settings (retrain/scoring_server.py) are the inference server's own settings, and
the Azure deployment carries the same ones the local slots run with."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from azure.ai.ml import load_online_deployment
from gunicorn.config import Config

from retrain.azureml import entities
from retrain.ports import ModelRef
from retrain.scoring_server import (
    SLOT_CONCURRENT_REQUESTS,
    SLOT_KEEP_ALIVE_S,
    SLOT_SERVER_ENVIRONMENT,
    SLOT_THREADS,
    SLOT_WORKERS,
)

REPO = Path(__file__).resolve().parents[2]


def test_gunicorn_reads_the_slot_arguments_as_a_keep_alive_threaded_worker() -> None:
    """GUNICORN_CMD_ARGS parsed by gunicorn's own parser (what it does at start-up): the gthread worker,
    whose connections stay open between requests, not the sync worker that closes each one."""
    config = Config()
    parsed = config.parser().parse_args(shlex.split(SLOT_SERVER_ENVIRONMENT["GUNICORN_CMD_ARGS"]))
    for key, value in vars(parsed).items():
        if value is not None and key in config.settings:
            config.set(key, value)
    assert config.worker_class_str == "gthread"
    assert (config.threads, config.keepalive) == (SLOT_THREADS, SLOT_KEEP_ALIVE_S)
    # azmlinfsrv passes -w itself (from WORKER_COUNT); a second source of truth here would be ignored.
    assert parsed.workers is None
    assert SLOT_SERVER_ENVIRONMENT["WORKER_COUNT"] == str(SLOT_WORKERS)


def test_the_azure_deployment_runs_the_slot_settings(tmp_path: Path) -> None:
    deployment = entities.deployment_entity(
        "retrain-msft", "blue", ModelRef("msft-forecaster", "4"), "Standard_DS3_v2", REPO
    )
    deployment.dump(tmp_path / "deployment.yml")
    loaded = load_online_deployment(tmp_path / "deployment.yml")  # the SDK's own schema
    assert loaded.environment_variables == SLOT_SERVER_ENVIRONMENT
    assert loaded.request_settings.max_concurrent_requests_per_instance == SLOT_CONCURRENT_REQUESTS
    assert SLOT_CONCURRENT_REQUESTS == SLOT_WORKERS * SLOT_THREADS


@pytest.mark.parametrize("variable", ["OMP_NUM_THREADS", "MKL_NUM_THREADS"])
def test_one_torch_thread_per_worker(variable: str) -> None:
    assert SLOT_SERVER_ENVIRONMENT[variable] == "1"
