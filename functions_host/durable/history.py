"""History events and actions in the Durable Functions extension's out-of-proc JSON shape.

Pure functions: they build the dicts the extension sends to the Python SDK (PascalCase fields, the
`EventType` integers of `azure.durable_functions.models.history.HistoryEventType`) and read the
actions the SDK returns (`actionType` integers of `models.actions.ActionType`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import IntEnum
from typing import Any


class EventType(IntEnum):
    """Mirrors `HistoryEventType` of the SDK (the extension's `EventType` enum)."""

    ExecutionStarted = 0
    ExecutionCompleted = 1
    ExecutionFailed = 2
    ExecutionTerminated = 3
    TaskScheduled = 4
    TaskCompleted = 5
    TaskFailed = 6
    SubOrchestrationInstanceCreated = 7
    SubOrchestrationInstanceCompleted = 8
    SubOrchestrationInstanceFailed = 9
    TimerCreated = 10
    TimerFired = 11
    OrchestratorStarted = 12
    OrchestratorCompleted = 13
    EventSent = 14
    EventRaised = 15
    ContinueAsNew = 16
    GenericEvent = 17
    HistoryState = 18
    ExecutionSuspended = 19
    ExecutionResumed = 20


class ActionType(IntEnum):
    """Mirrors `ActionType` of the SDK."""

    CallActivity = 0
    CallActivityWithRetry = 1
    CallSubOrchestrator = 2
    CallSubOrchestratorWithRetry = 3
    ContinueAsNew = 4
    CreateTimer = 5
    WaitForExternalEvent = 6
    CallEntity = 7
    CallHttp = 8
    SignalEntity = 9
    WhenAny = 11
    WhenAll = 12


# Replay schema V2 (`ReplaySchema.V2 == 1`): one flat, cumulative action list with WhenAny/WhenAll
# compound actions, which is what task_any/task_all need. V3 only adds long timers for backends with
# a maximum timer duration, which SQLite does not have.
REPLAY_SCHEMA_VERSION = 1

# Actions that take a sequence number in the SDK (`DurableOrchestrationContext._sequence_number`):
# every atomic task except external-event waits (keyed by name), plus the fire-and-forget ones.
_NUMBERED = {
    ActionType.CallActivity,
    ActionType.CallActivityWithRetry,
    ActionType.CallSubOrchestrator,
    ActionType.CallSubOrchestratorWithRetry,
    ActionType.CreateTimer,
    ActionType.CallEntity,
    ActionType.CallHttp,
    ActionType.SignalEntity,
    ActionType.ContinueAsNew,
}


def format_time(moment: datetime) -> str:
    """ISO 8601 UTC with microseconds and a `Z`, as the extension and the HTTP API write times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def event(event_type: EventType, timestamp: datetime, *, event_id: int = -1, **fields: Any) -> dict[str, Any]:
    """One history event; `fields` are the extension's PascalCase properties (Name, Input, ...)."""
    return {
        "EventType": int(event_type),
        "EventId": event_id,
        "IsPlayed": False,
        "Timestamp": format_time(timestamp),
        **fields,
    }


def orchestrator_started(now: datetime) -> dict[str, Any]:
    return event(EventType.OrchestratorStarted, now)


def orchestrator_completed(now: datetime) -> dict[str, Any]:
    return event(EventType.OrchestratorCompleted, now)


def execution_started(
    now: datetime,
    name: str,
    instance_id: str,
    execution_id: str,
    input_json: str | None,
    parent_instance_id: str | None = None,
    *,
    version: str = "",
) -> dict[str, Any]:
    """`version` is what the SDK shows as `context.version` (the extension's orchestration version)."""
    return event(
        EventType.ExecutionStarted,
        now,
        Name=name,
        Input=input_json,
        Version=version,
        OrchestrationInstance={"InstanceId": instance_id, "ExecutionId": execution_id},
        ParentInstance=(
            {"OrchestrationInstance": {"InstanceId": parent_instance_id}} if parent_instance_id else None
        ),
    )


def execution_completed(
    now: datetime, status: str, result_json: str | None, failure: str | None = None
) -> dict[str, Any]:
    fields: dict[str, Any] = {"OrchestrationStatus": status, "Result": result_json}
    if failure is not None:
        fields["FailureDetails"] = {"ErrorMessage": failure}
    return event(EventType.ExecutionCompleted, now, **fields)


def execution_terminated(now: datetime, reason: str | None) -> dict[str, Any]:
    return event(EventType.ExecutionTerminated, now, Input=reason)


def execution_suspended(now: datetime, reason: str | None) -> dict[str, Any]:
    return event(EventType.ExecutionSuspended, now, Reason=reason)


def execution_resumed(now: datetime, reason: str | None) -> dict[str, Any]:
    return event(EventType.ExecutionResumed, now, Reason=reason)


def task_scheduled(now: datetime, task_id: int, name: str, input_json: str | None) -> dict[str, Any]:
    return event(EventType.TaskScheduled, now, event_id=task_id, Name=name, Input=input_json)


def task_completed(now: datetime, task_id: int, result_json: str | None) -> dict[str, Any]:
    return event(EventType.TaskCompleted, now, TaskScheduledId=task_id, Result=result_json)


def task_failed(now: datetime, task_id: int, reason: str, details: str) -> dict[str, Any]:
    return event(EventType.TaskFailed, now, TaskScheduledId=task_id, Reason=reason, Details=details)


def timer_created(now: datetime, timer_id: int, fire_at: datetime) -> dict[str, Any]:
    return event(EventType.TimerCreated, now, event_id=timer_id, FireAt=format_time(fire_at))


def timer_fired(now: datetime, timer_id: int, fire_at: datetime) -> dict[str, Any]:
    return event(EventType.TimerFired, now, TimerId=timer_id, FireAt=format_time(fire_at))


def event_raised(now: datetime, name: str, input_json: str | None) -> dict[str, Any]:
    return event(EventType.EventRaised, now, Name=name, Input=input_json)


def sub_orchestration_created(
    now: datetime, task_id: int, name: str, instance_id: str, input_json: str | None
) -> dict[str, Any]:
    return event(
        EventType.SubOrchestrationInstanceCreated,
        now,
        event_id=task_id,
        Name=name,
        InstanceId=instance_id,
        Input=input_json,
    )


def sub_orchestration_completed(now: datetime, task_id: int, result_json: str | None) -> dict[str, Any]:
    return event(
        EventType.SubOrchestrationInstanceCompleted, now, TaskScheduledId=task_id, Result=result_json
    )


def sub_orchestration_failed(now: datetime, task_id: int, reason: str, details: str) -> dict[str, Any]:
    return event(
        EventType.SubOrchestrationInstanceFailed, now, TaskScheduledId=task_id, Reason=reason, Details=details
    )


def context_json(
    *,
    history: list[dict[str, Any]],
    instance_id: str,
    input_json: str | None,
    is_replaying: bool,
    parent_instance_id: str | None,
) -> dict[str, Any]:
    """The orchestration trigger payload the extension sends to an out-of-proc worker."""
    return {
        "history": history,
        "input": input_json,
        "instanceId": instance_id,
        "isReplaying": is_replaying,
        "parentInstanceId": parent_instance_id,
        "upperSchemaVersion": REPLAY_SCHEMA_VERSION,
    }


def leaf_actions(actions: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The atomic actions in the order the SDK scheduled them (compound actions flattened).

    The SDK numbers tasks in this order too, so the n-th numbered leaf has the n-th sequence id
    (apart from ids that with-retry tasks take while the history is replayed, see the engine).
    """
    leaves: list[dict[str, Any]] = []

    def walk(action: dict[str, Any]) -> None:
        if action.get("actionType") in (ActionType.WhenAll, ActionType.WhenAny):
            for child in action.get("compoundActions") or []:
                walk(child)
        else:
            leaves.append(action)

    for group in actions:
        for action in group:
            walk(action)
    return leaves


def takes_sequence_number(action: dict[str, Any]) -> bool:
    return action.get("actionType") in _NUMBERED


def action_name(action: dict[str, Any]) -> str:
    try:
        return ActionType(action["actionType"]).name
    except (KeyError, ValueError):
        return f"unknown action type {action.get('actionType')!r}"


def signature(action: dict[str, Any]) -> str:
    """What must stay the same on replay: the kind of action and its target (not its input)."""
    kind = action_name(action)
    target = action.get("functionName") or action.get("externalEventName") or ""
    return f"{kind}({target})" if target else kind
