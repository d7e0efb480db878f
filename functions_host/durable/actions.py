"""Turns the actions the SDK returns from one episode into history events and work items.

Sequence ids follow the SDK's numbering (`DurableOrchestrationContext._sequence_number`): each new
numbered action takes the next id, and with-retry tasks take an id for their retry timer when a
failure is replayed and for the next attempt when that timer fires. Those two events are therefore
always the first new event of an episode (see `EpisodeRunner`), so the ids assigned here up front
are exactly those the SDK assigns while replaying.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from . import history as h
from .history import ActionType, EventType
from .model import SUPPORTED_ACTIONS, Episode, OrchestrationFailure

_OUT_OF_PROC_MARKER = "\n\n$OutOfProcData$:"


class ActionPlanner:
    """Checks the SDK's actions against the recorded ones (determinism) and plans the new ones."""

    def __init__(self, has_function: Callable[[str, str], bool], default_version: str = "") -> None:
        self._has_function = has_function
        self._default_version = default_version

    def interpret(
        self, inst: Any, state: dict[str, Any], result: dict[str, Any], now: datetime, episode: Episode
    ) -> tuple[str, str | None]:
        """Turns the SDK's actions into history events and work; returns (status, output or error)."""
        leaves = h.leaf_actions(result.get("actions") or [])
        known: list[str] = state["sigs"]
        for index, (old, new) in enumerate(zip(known, leaves, strict=False)):
            if old != h.signature(new):
                raise OrchestrationFailure(
                    f"Non-deterministic workflow detected: action #{index} in the history of instance "
                    f"{inst['instance_id']!r} is {old}, but the orchestrator now produced {h.signature(new)}. "
                    "The orchestrator code changed while this instance was running; orchestrators must "
                    "replay the same actions in the same order (start a new instance for the new code)."
                )
        error = result.get("error")
        if len(leaves) < len(known) and not error:
            raise OrchestrationFailure(
                f"Non-deterministic workflow detected: the history of instance {inst['instance_id']!r} has "
                f"{len(known)} actions (the next is {known[len(leaves)]}), but the orchestrator now "
                f"produced only {len(leaves)}. The orchestrator code changed while this instance was running."
            )
        state["custom_status"] = result.get("customStatus")
        # Timers cancelled after they were scheduled (the SDK flips isCanceled on the same action).
        for index, action in enumerate(leaves[: len(known)]):
            timer_id = state["leaf_ids"][index]
            if (
                action.get("actionType") == ActionType.CreateTimer
                and action.get("isCanceled")
                and timer_id is not None
            ):
                episode.cancelled_timers.append(timer_id)
        if error:
            return "Failed", str(error)
        continue_input: tuple[bool, str | None] = (False, None)
        for action in leaves[len(known) :]:
            event_id = None
            if h.takes_sequence_number(action):
                event_id = state["next_id"]
                state["next_id"] += 1
            state["sigs"].append(h.signature(action))
            state["leaf_ids"].append(event_id)
            kind = action.get("actionType")
            if kind in (ActionType.CallActivity, ActionType.CallActivityWithRetry):
                assert event_id is not None  # an activity, a timer and a sub-orchestration take one
                self._schedule_activity(state, action, event_id, now, episode)
            elif kind == ActionType.CreateTimer:
                assert event_id is not None
                fire_at = h.parse_time(action["fireAt"])
                episode.events.append(h.timer_created(now, event_id, fire_at))
                if not action.get("isCanceled"):
                    episode.work.append(
                        {"kind": "timer", "event_id": event_id, "due": h.format_time(fire_at)}
                    )
            elif kind == ActionType.WaitForExternalEvent:
                name = action["externalEventName"]
                state["waits"][name] = state["waits"].get(name, 0) + 1
            elif kind in (ActionType.CallSubOrchestrator, ActionType.CallSubOrchestratorWithRetry):
                assert event_id is not None
                self._schedule_sub_orchestration(inst, state, action, event_id, now, episode)
            elif kind == ActionType.ContinueAsNew:
                continue_input = (True, action_input(action))
            else:
                raise OrchestrationFailure(
                    f"The orchestrator used {h.action_name(action)}, which the local durable host does not "
                    f"support. Supported actions: {', '.join(SUPPORTED_ACTIONS)}."
                )
        if continue_input[0]:
            return "ContinuedAsNew", continue_input[1]
        if result.get("isDone"):
            output = result.get("output")
            return "Completed", None if output is None else json.dumps(output)
        return "Running", None

    def _schedule_activity(
        self, state: dict[str, Any], action: dict[str, Any], event_id: int, now: datetime, episode: Episode
    ) -> None:
        name = action["functionName"]
        input_json = action_input(action)
        episode.events.append(h.task_scheduled(now, event_id, name, input_json))
        retry = action.get("actionType") == ActionType.CallActivityWithRetry
        if retry:
            state["retries"][str(event_id)] = _retry_chain(
                "activity", name, input_json, event_id, action, now
            )
        self._queue_activity(name, input_json, event_id, retry, now, episode)

    def _queue_activity(
        self, name: str, input_json: str | None, event_id: int, retry: bool, now: datetime, episode: Episode
    ) -> None:
        if self._has_function("activity", name):
            episode.work.append(
                {
                    "kind": "activity",
                    "event_id": event_id,
                    "name": name,
                    "input": input_json,
                    "retry": int(retry),
                }
            )
        else:
            message = (
                f"The function '{name}' doesn't exist, is disabled, or is not an activity function. "
                "Call one of the functions declared with @app.activity_trigger."
            )
            episode.inbox.append(("self", "", h.task_failed(now, event_id, message, message), retry))

    def _schedule_sub_orchestration(
        self,
        inst: Any,
        state: dict[str, Any],
        action: dict[str, Any],
        event_id: int,
        now: datetime,
        episode: Episode,
    ) -> None:
        name = action["functionName"]
        input_json = action_input(action)
        # As the extension: an explicit version wins, else the defaultVersion of host.json *now*.
        version = action.get("version")
        version = self._default_version if version is None else str(version)
        retry = action.get("actionType") == ActionType.CallSubOrchestratorWithRetry
        if retry:
            chain = _retry_chain("sub", name, input_json, event_id, action, now)
            chain.update(instance_id=action.get("instanceId"), version=version)
            state["retries"][str(event_id)] = chain
        self._start_sub_orchestration(
            inst, name, action.get("instanceId"), input_json, version, event_id, retry, now, episode
        )

    def _start_sub_orchestration(
        self,
        inst: Any,
        name: str,
        instance_id: str | None,
        input_json: str | None,
        version: str,
        event_id: int,
        retry: bool,
        now: datetime,
        episode: Episode,
    ) -> None:
        child_id = instance_id or f"{inst['instance_id']}:{event_id:04x}"
        episode.events.append(h.sub_orchestration_created(now, event_id, name, child_id, input_json))
        if not self._has_function("orchestrator", name):
            message = f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator function."
            failed = h.sub_orchestration_failed(now, event_id, message, message)
            episode.inbox.append(("self", "", failed, retry))
            return
        episode.new_instances.append(
            {
                "name": name,
                "instance_id": child_id,
                "input": input_json,
                "parent": (inst["instance_id"], inst["execution_id"], event_id),
                "version": version,
                "parent_retries": retry,  # its failure then opens the parent's next batch (see module doc)
            }
        )

    def prepare_retry_event(
        self, inst: Any, state: dict[str, Any], event: dict[str, Any], now: datetime, episode: Episode
    ) -> list[dict[str, Any]]:
        """Assigns the id the SDK gives to a with-retry task's next timer or attempt (see module doc)."""
        if event["EventType"] in (EventType.TaskFailed, EventType.SubOrchestrationInstanceFailed):
            chain = _chain_by(state, "current", event["TaskScheduledId"])
            if chain is None:
                return []
            timer_id = state["next_id"]
            state["next_id"] += 1
            # As DTFx's RetryInterceptor: a timer after every failed attempt, also after the last one.
            delay_ms = chain["first_ms"] * chain["backoff"] ** (chain["attempts"] - 1)
            if chain["max_interval_ms"] is not None:
                delay_ms = min(delay_ms, float(chain["max_interval_ms"]))
            timeout = chain["timeout_ms"]
            if timeout is not None and now >= h.parse_time(chain["started"]) + timedelta(
                milliseconds=float(timeout)
            ):
                chain["timed_out"] = True
                delay_ms = 0.0
            fire_at = now + timedelta(milliseconds=delay_ms)
            chain["timer"] = timer_id
            episode.work.append(
                {"kind": "timer", "event_id": timer_id, "due": h.format_time(fire_at), "retry": 1}
            )
            return [h.timer_created(now, timer_id, fire_at)]
        if event["EventType"] == EventType.TimerFired:
            chain = _chain_by(state, "timer", event["TimerId"])
            if chain is None or chain["attempts"] >= chain["max"]:
                return []  # the SDK now fails the task with the last attempt's error
            attempt_id = state["next_id"]
            state["next_id"] += 1
            chain["attempts"] += 1
            chain["current"] = attempt_id
            chain["timer"] = None
            if chain.get("kind") == "sub":
                return self._retry_sub_orchestration(inst, chain, attempt_id, now, episode)
            scheduled = h.task_scheduled(now, attempt_id, chain["name"], chain["input"])
            if chain["timed_out"]:
                message = (
                    f"Activity function '{chain['name']}' was not retried: the retry timeout of "
                    f"{chain['timeout_ms']} ms has passed."
                )
                episode.inbox.append(("self", "", h.task_failed(now, attempt_id, message, message), True))
            else:
                episode.work.append(
                    {
                        "kind": "activity",
                        "event_id": attempt_id,
                        "name": chain["name"],
                        "input": chain["input"],
                        "retry": 1,
                    }
                )
            return [scheduled]
        return []

    def _retry_sub_orchestration(
        self, inst: Any, chain: dict[str, Any], attempt_id: int, now: datetime, episode: Episode
    ) -> list[dict[str, Any]]:
        if chain["timed_out"]:
            child_id = chain["instance_id"] or f"{inst['instance_id']}:{attempt_id:04x}"
            message = (
                f"Sub-orchestration '{chain['name']}' was not retried: the retry timeout of "
                f"{chain['timeout_ms']} ms has passed."
            )
            failed = h.sub_orchestration_failed(now, attempt_id, message, message)
            episode.inbox.append(("self", "", failed, True))
            return [h.sub_orchestration_created(now, attempt_id, chain["name"], child_id, chain["input"])]
        self._start_sub_orchestration(
            inst,
            chain["name"],
            chain["instance_id"],
            chain["input"],
            chain["version"],
            attempt_id,
            True,
            now,
            episode,
        )
        return [episode.events.pop()]  # its SubOrchestrationInstanceCreated goes with the retry events


def _retry_chain(
    kind: str, name: str, input_json: str | None, event_id: int, action: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """A with-retry task's bookkeeping: its current attempt's id, its retry timer, the RetryOptions."""
    options = action.get("retryOptions") or {}
    return {
        "kind": kind,
        "name": name,
        "input": input_json,
        "current": event_id,
        "timer": None,
        "attempts": 1,
        "max": int(options.get("maxNumberOfAttempts", 1)),
        "first_ms": float(options.get("firstRetryIntervalInMilliseconds", 1000)),
        "backoff": float(options.get("backoffCoefficient", 1.0)),
        "max_interval_ms": options.get("maxRetryIntervalInMilliseconds"),
        "timeout_ms": options.get("retryTimeoutInMilliseconds"),
        "started": h.format_time(now),
        "timed_out": False,
    }


def action_input(action: dict[str, Any]) -> str | None:
    """The SDK serialises action inputs itself (`df_dumps`), so `input` is already a JSON string."""
    value = action.get("input")
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def split_out_of_proc_error(text: str) -> tuple[str, dict[str, Any] | None]:
    """Splits the SDK's "<message>\n\n$OutOfProcData$:<state JSON>" into the message and the state.

    The first marker followed by a JSON object wins, so a user message that itself contains the
    marker is kept whole; text without a parsable state is all message.
    """
    start = text.find(_OUT_OF_PROC_MARKER)
    while start != -1:
        try:
            sdk_state = json.loads(text[start + len(_OUT_OF_PROC_MARKER) :])
        except ValueError:
            sdk_state = None
        if isinstance(sdk_state, dict):
            return text[:start], sdk_state
        start = text.find(_OUT_OF_PROC_MARKER, start + 1)
    return text, None


def _chain_by(state: dict[str, Any], key: str, event_id: int) -> dict[str, Any] | None:
    for chain in state["retries"].values():
        if chain[key] == event_id:
            return chain
    return None
