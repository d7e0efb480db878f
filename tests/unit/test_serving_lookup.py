"""Which endpoint serves a ticker (retrain/serving.py), as `predict`, `run` and the operator routes see it,
and the operator's rollback of an endpoint whose slots serve bundles (traffic_control.rollback_table),
on the in-memory platform adapter."""

from __future__ import annotations

import time

import pytest

from retrain.ports import EndpointState, ModelRef
from retrain.serving import find_ticker_endpoint, scoring_request
from retrain.traffic_control import rollback_table
from tests.integration.memory_platform import MemoryPlatform


def _deploy(memory: MemoryPlatform, endpoint: str, slot: str, model: ModelRef) -> None:
    memory.begin_create_endpoint(endpoint)
    memory.begin_deployment(endpoint, slot, model)
    deadline = time.monotonic() + 5
    while memory.get_deployment(endpoint, slot).state != "Succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> MemoryPlatform:
    for key in ("RETRAIN_ENDPOINTS", "RETRAIN_ENDPOINT_SUFFIX"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RETRAIN_PLATFORM", "local")
    return MemoryPlatform()


def test_a_shared_endpoint_serves_every_ticker_of_its_bundle(memory: MemoryPlatform) -> None:
    bundle = memory.register_bundle(
        "fleet-models",
        "1",
        None,
        {"MSFT": ModelRef("msft-forecaster", "3"), "AAPL": ModelRef("aapl-forecaster", "1")},
        [],
    )
    _deploy(memory, "fleet-models", "blue", bundle.as_model())

    served = find_ticker_endpoint(memory, "MSFT")
    assert served is not None and served.endpoint.name == "fleet-models"
    assert served.bundled and served.tickers == ("AAPL", "MSFT")
    assert scoring_request("MSFT", [1.0, 2.0], served.bundled) == {"ticker": "MSFT", "close": [1.0, 2.0]}
    assert find_ticker_endpoint(memory, "IBM") is None  # the endpoint exists, but does not serve IBM


def test_an_older_state_dirs_own_endpoint_with_a_single_model_is_found_and_sent_closes_only(
    memory: MemoryPlatform,
) -> None:
    _deploy(memory, "msft-forecast", "blue", ModelRef("msft-forecaster", "2"))

    served = find_ticker_endpoint(memory, "MSFT")  # the layout's fleet-models does not exist
    assert served is not None and served.endpoint.name == "msft-forecast"
    assert not served.bundled and served.tickers == ("MSFT",)
    assert scoring_request("MSFT", [1.0], served.bundled) == {"close": [1.0]}


def _bundles(traffic: dict[str, int]) -> EndpointState:
    tagged = {"bundle": "true"}
    return EndpointState(
        name="fleet-models",
        state="Succeeded",
        traffic=traffic,
        deployments={
            "blue": {"name": "fleet-models-bundle", "version": "9", "tags": tagged},
            "green": {"name": "fleet-models-bundle", "version": "10", "tags": tagged},
        },
    )


@pytest.mark.parametrize(
    ("traffic", "back_to"),
    [
        ({"blue": 0, "green": 100}, "blue"),  # the previous bundle, kept cold
        ({"blue": 100, "green": 0}, "green"),  # after a rollback: the other slot again
        ({"blue": 90, "green": 10}, "blue"),  # a split left by an interrupted rollout: the older bundle
    ],
)
def test_a_rollback_of_a_bundle_endpoint_restores_the_previous_bundle(traffic, back_to) -> None:
    table = rollback_table(_bundles(traffic), champion_version="3")  # a ticker's champion: not a bundle's
    assert table == {slot: 100 if slot == back_to else 0 for slot in ("blue", "green")}
