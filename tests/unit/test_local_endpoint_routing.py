"""The endpoint router's pure parts: weighted slot choice and traffic/name validation."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from retrain.local.endpoint import WeightedPicker, validate_endpoint_name, validate_slot, validate_traffic
from retrain.ports import PlatformError


@pytest.mark.parametrize(
    "weights", [{"blue": 90, "green": 10}, {"blue": 50, "green": 50}, {"blue": 1, "green": 99}]
)
def test_every_hundred_picks_match_the_weights_exactly(weights: dict[str, int]) -> None:
    picker = WeightedPicker(weights)
    for _ in range(3):
        assert Counter(picker.pick() for _ in range(100)) == Counter({s: w for s, w in weights.items() if w})


def test_picks_are_interleaved_not_bursts() -> None:
    picker = WeightedPicker({"blue": 50, "green": 50})
    picks = [picker.pick() for _ in range(10)]
    assert all(a != b for a, b in zip(picks, picks[1:], strict=False))
    picker = WeightedPicker({"blue": 90, "green": 10})
    greens = [i for i, s in enumerate(picker.pick() for _ in range(100)) if s == "green"]
    assert len(greens) == 10 and min(b - a for a, b in zip(greens, greens[1:], strict=False)) >= 9


def test_zero_weight_slot_is_never_picked_and_no_traffic_picks_nothing() -> None:
    picker = WeightedPicker({"blue": 0, "green": 100})
    assert {picker.pick() for _ in range(50)} == {"green"}
    assert WeightedPicker({}).pick() is None
    assert WeightedPicker({"blue": 0}).pick() is None


def test_picker_is_exact_under_concurrent_use() -> None:
    picker = WeightedPicker({"blue": 90, "green": 10})
    picks: list[str | None] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = [picker.pick() for _ in range(250)]
        with lock:
            picks.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(picks) == Counter({"blue": 900, "green": 100})


def test_valid_traffic_is_completed_with_every_deployed_slot() -> None:
    assert validate_traffic({"blue": 100}, {"blue", "green"}) == {"blue": 100, "green": 0}
    assert validate_traffic({"blue": 90, "green": 10}, {"blue", "green"}) == {"blue": 90, "green": 10}
    # A slot that is not deployed may be named with 0 %.
    assert validate_traffic({"blue": 100, "green": 0}, {"blue"}) == {"blue": 100, "green": 0}


@pytest.mark.parametrize(
    ("traffic", "message"),
    [
        ({"blue": 90, "green": 20}, "sum to 100"),
        ({"blue": 50}, "sum to 100"),
        ({"red": 100}, "unknown slot"),
        ({"blue": 100.0}, "integer"),
        ({"blue": True}, "integer"),
        ({"blue": 150, "green": -50}, "integer 0..100"),
        ({}, "non-empty"),
    ],
)
def test_invalid_traffic_is_rejected_with_the_reason(traffic: dict, message: str) -> None:
    with pytest.raises(PlatformError, match=message):
        validate_traffic(traffic, {"blue", "green"})


def test_traffic_to_a_slot_without_deployment_is_rejected() -> None:
    with pytest.raises(PlatformError, match="no deployment"):
        validate_traffic({"blue": 0, "green": 100}, {"blue"})


@pytest.mark.parametrize("name", ["msft-forecast", "abc", "A1-b2"])
def test_endpoint_names_azure_accepts(name: str) -> None:
    assert validate_endpoint_name(name) == name


@pytest.mark.parametrize("name", ["ab", "1abc", "abc-", "has_underscore", "x" * 33, "../etc"])
def test_endpoint_names_azure_rejects(name: str) -> None:
    with pytest.raises(PlatformError, match="3-32 letters"):
        validate_endpoint_name(name)


def test_unknown_slot_is_rejected() -> None:
    assert validate_slot("green") == "green"
    with pytest.raises(PlatformError, match="slots are blue, green"):
        validate_slot("red")
