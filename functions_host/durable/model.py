"""The durable engine's vocabulary: runtime states, client-facing errors, the per-instance replay state,
and the JSON shapes the HTTP API shows (status, history events)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from . import history as h
from .history import EventType

RUNNING_STATES = ("Pending", "Running")
TERMINAL_STATES = ("Completed", "Failed", "Terminated")
SUSPENDED = "Suspended"
# Every runtime status Azure accepts as a filter; the engine never produces Canceled or ContinuedAsNew
# (continue_as_new restarts the same instance), so filtering on them matches nothing, as in Azure.
ALL_STATES = (
    "Pending",
    "Running",
    "Completed",
    "ContinuedAsNew",
    "Failed",
    "Canceled",
    "Terminated",
    "Suspended",
)
SUPPORTED_ACTIONS = (
    "CallActivity",
    "CallActivityWithRetry",
    "CallSubOrchestrator",
    "CallSubOrchestratorWithRetry",
    "CreateTimer",
    "WaitForExternalEvent",
    "ContinueAsNew",
    "WhenAny",
    "WhenAll",
)


class DurableError(Exception):
    """Base class of the engine's client-facing errors."""


class InstanceExistsError(DurableError):
    pass


class InstanceNotFound(DurableError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "instance not found"


class InstanceGone(DurableError):
    """The operation needs a live instance, but this one has finished (the HTTP API answers 410)."""


class InstanceStillRunning(DurableError):
    """The operation needs a finished instance (purge), but this one is still live."""


class FunctionNotFoundError(DurableError, ValueError):
    pass


class OrchestrationFailure(Exception):
    """Fails the running instance with this message (unsupported action, non-determinism, ...).

    `sdk_state` is the SDK's orchestrator state when the orchestrator itself raised (its custom status
    is kept on the failed instance, as in Azure); None when the engine found the fault, in which case
    the instance keeps the custom status it had.
    """

    def __init__(self, message: str, sdk_state: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.sdk_state = sdk_state


@dataclass
class Episode:
    """What one orchestrator episode adds to the store besides its history events."""

    events: list[dict[str, Any]] = field(default_factory=list)
    work: list[dict[str, Any]] = field(default_factory=list)
    inbox: list[tuple[str, str, dict[str, Any], bool]] = field(default_factory=list)  # to itself
    new_instances: list[dict[str, Any]] = field(default_factory=list)
    cancelled_timers: list[int] = field(default_factory=list)


def fresh_state() -> dict[str, Any]:
    """The engine's replay bookkeeping of one execution (kept in `instances.state`)."""
    return {"next_id": 0, "sigs": [], "leaf_ids": [], "waits": {}, "delivered": {}, "retries": {}}


def check_json(what: str, text: str | None) -> None:
    if text is None:
        return
    try:
        json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f'The {what} must be a JSON document (e.g. \'{{"ticker": "MSFT"}}\' or \'"text"\'), '
            f"got {str(text)[:80]!r}."
        ) from exc


def status_json(row: Any, *, show_input: bool) -> dict[str, Any]:
    """An instance as the HTTP API's status query shows it (plus the version it was started with)."""

    def load(text: str | None) -> Any:
        return None if text is None else json.loads(text)

    return {
        "name": row["name"],
        "instanceId": row["instance_id"],
        "runtimeStatus": row["status"],
        "input": load(row["input"]) if show_input else None,
        "customStatus": load(row["custom_status"]),
        "output": load(row["output"]),
        "createdTime": public_time(row["created_time"]),
        "lastUpdatedTime": public_time(row["last_updated_time"]),
        "version": row["version"] or "",
    }


def public_time(text: str) -> str:
    # the HTTP API writes whole seconds: "2024-05-01T12:00:00Z"
    return h.parse_time(text).strftime("%Y-%m-%dT%H:%M:%SZ")


def public_event(event: dict[str, Any], show_output: bool) -> dict[str, Any]:
    """A history event as the HTTP API's showHistory lists it (names instead of numbers)."""
    public: dict[str, Any] = {
        "EventType": EventType(event["EventType"]).name,
        "EventId": event["EventId"],
        "Timestamp": event["Timestamp"],
    }
    for key in ("Name", "Version", "TaskScheduledId", "TimerId", "FireAt", "Reason", "OrchestrationStatus"):
        if event.get(key) is not None:
            public[key] = event[key]
    if show_output:
        for key in ("Input", "Result", "Details"):
            if event.get(key) is not None:
                public[key] = event[key]
    return public
