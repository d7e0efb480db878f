"""The endpoint's routing decisions, pure (no I/O, no processes): the weighted slot picker, the routing
table the router swaps in whole, the choice of a live slot for one request (Azure's 404 without
traffic, 503 while no slot with traffic is live), and traffic/name/slot validation as Azure does it."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

from retrain.ports import SLOTS, PlatformError

DEPLOYMENT_HEADER = "azureml-model-deployment"
_ENDPOINT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]\Z")

NO_VALID_DEPLOYMENTS = (
    "No valid deployments to route to. Please check that the endpoint has at least one deployment with "
    "positive weight values or use a deployment specific header to route."
)  # Azure's own 404 text for an endpoint whose deployments all have 0 % traffic
RETRY_AFTER_S = 2


class WeightedPicker:
    """Smooth weighted round-robin (as nginx does): over any 100 consecutive picks each slot gets
    exactly its percentage, interleaved rather than in bursts. Thread-safe."""

    def __init__(self, weights: dict[str, int]) -> None:
        self._weights = {slot: w for slot, w in weights.items() if w > 0}
        self._current = dict.fromkeys(self._weights, 0)
        self._total = sum(self._weights.values())
        self._lock = threading.Lock()

    def pick(self) -> str | None:
        if not self._weights:
            return None
        with self._lock:
            for slot, weight in self._weights.items():
                self._current[slot] += weight
            best = max(self._current, key=lambda s: self._current[s])
            self._current[best] -= self._total
            return best


def validate_traffic(traffic: dict[str, Any], deployed: set[str]) -> dict[str, int]:
    """Check a traffic table the way Azure does: known, deployed slots; integer percentages 0..100
    summing to 100, or all 0 (no slot serves: Azure takes it, and unpinned requests then get 404
    `NO_VALID_DEPLOYMENTS`; a cycle whose first model failed its live smoke test rolls back to it).
    Returns the table with every deployed slot present."""
    if not isinstance(traffic, dict) or not traffic:
        raise PlatformError(
            f"traffic must be a non-empty mapping slot -> percent, e.g. {{'blue': 100}}; got {traffic!r}"
        )
    for slot, percent in traffic.items():
        if slot not in SLOTS:
            raise PlatformError(f"unknown slot {slot!r} in traffic; slots are {', '.join(SLOTS)}")
        if slot not in deployed and percent:
            raise PlatformError(
                f"slot {slot!r} has no deployment; deploy a model to it before giving it traffic"
            )
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise PlatformError(f"traffic for {slot!r} must be an integer 0..100; got {percent!r}")
    total = sum(traffic.values())
    if total not in (0, 100):
        raise PlatformError(
            f"traffic percentages must sum to 100 (or all be 0: no slot serves); {traffic} sums to {total}"
        )
    return {slot: int(traffic.get(slot, 0)) for slot in sorted(deployed | set(traffic))}


def validate_endpoint_name(name: str) -> str:
    if not isinstance(name, str) or not _ENDPOINT_NAME.match(name):
        raise PlatformError(
            f"endpoint name {name!r} is invalid: use 3-32 letters, digits or '-', starting with a letter "
            "and not ending with '-' (e.g. 'msft-forecast')"
        )
    return name


def validate_slot(slot: str) -> str:
    if slot not in SLOTS:
        raise PlatformError(f"unknown slot {slot!r}; slots are {', '.join(SLOTS)}")
    return slot


@dataclass(frozen=True)
class RoutingTable:
    """An immutable snapshot the router swaps in whole: the applied traffic and the slots that may be
    routed to (a slot being deleted is not among them)."""

    weights: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)  # slot -> port of its inference server
    revision: int = 0

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RoutingTable:
        ports = {
            slot: int(info["port"])
            for slot, info in state.get("slots", {}).items()
            if not info.get("deleting")
        }
        weights = {slot: int(w) for slot, w in state.get("traffic", {}).items() if slot in ports and w > 0}
        return cls(weights=weights, ports=ports, revision=int(state.get("revision", 0)))


def choose_slot(
    endpoint: str,
    table: RoutingTable,
    picker: WeightedPicker,
    live: dict[tuple[str, int], bool],
    pinned: str | None,
    method: str,
    tried: set[str],
) -> tuple[str, int] | tuple[int, dict[str, Any]]:
    """Where one request goes: (slot, port) of a live slot, or (status, error body). `live` maps
    (slot, port) to the last health answer; `tried` are the slots that already failed this request.
    The caller holds the lock that makes this choice and its in-flight count one step."""
    if pinned:
        if pinned not in table.ports:
            return 404, {
                "error": f"deployment {pinned!r} not found on endpoint {endpoint}; "
                f"deployed slots: {sorted(table.ports)}"
            }
        candidates = [pinned] if pinned not in tried else []
    else:
        first = picker.pick()
        live_slots = [s for s in table.weights if live.get((s, table.ports[s]))]
        candidates = [s for s in ([first] if first else []) + live_slots if s not in tried]
        if not table.weights:
            if method == "GET" and table.ports:  # liveness with no traffic yet: any live deployed slot
                candidates = [
                    s for s in sorted(table.ports) if live.get((s, table.ports[s])) and s not in tried
                ]
            else:
                return 404, {"error": NO_VALID_DEPLOYMENTS}
    for slot in candidates:
        if live.get((slot, table.ports[slot])):
            return slot, table.ports[slot]
    target = f"deployment {pinned!r}" if pinned else "no deployment with traffic"
    return 503, {
        "error": f"endpoint {endpoint}: {target} is live right now (starting or restarting); "
        f"retry in {RETRY_AFTER_S}s"
    }
