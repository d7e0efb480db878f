"""The local durable engine: drives the real Durable Functions SDK from a SQLite history.

One scheduler thread runs orchestrator episodes and fires due timers; a thread pool runs activities.
Every step is one SQLite transaction:
- an episode commits its history events, the inbox rows it consumed, the work it scheduled and the
  instance's new status together;
- an activity's completion is committed in the same transaction that deletes its work item, so a
  committed completion never runs again, while an activity that was running at a crash runs again
  on restart (at-least-once, as in Azure).

Sequence ids follow the SDK's numbering (`DurableOrchestrationContext._sequence_number`): each new
numbered action takes the next id, and with-retry tasks take an id for their retry timer when a
failure is replayed and for the next attempt when that timer fires. Those two events are therefore
always the first new event of an episode, so the ids the engine assigns up front are exactly those
the SDK assigns while replaying.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from . import history as h
from .history import ActionType, EventType
from .store import Store

log = logging.getLogger(__name__)

RUNNING_STATES = ("Pending", "Running")
TERMINAL_STATES = ("Completed", "Failed", "Terminated")
# Every runtime status Azure accepts as a filter; the engine never produces Canceled or Suspended, so
# filtering on them matches nothing (as in Azure when no instance is in that state).
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
_OUT_OF_PROC_MARKER = "\n\n$OutOfProcData$:"
SUPPORTED_ACTIONS = (
    "CallActivity",
    "CallActivityWithRetry",
    "CallSubOrchestrator",
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
class _Episode:
    """What one orchestrator episode adds to the store."""

    events: list[dict[str, Any]] = field(default_factory=list)
    work: list[dict[str, Any]] = field(default_factory=list)
    inbox: list[tuple[str, str, dict[str, Any], bool]] = field(default_factory=list)  # to other instances
    new_instances: list[dict[str, Any]] = field(default_factory=list)
    cancelled_timers: list[int] = field(default_factory=list)


class DurableEngine:
    def __init__(
        self,
        db_path: Path,
        run_orchestrator: Callable[[str, str], str],
        run_activity: Callable[[str, str | None], str],
        *,
        has_function: Callable[[str, str], bool] | None = None,
        max_workers: int = 4,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._store = Store(Path(db_path))
        self._run_orchestrator = run_orchestrator
        self._run_activity = run_activity
        self._has_function = has_function or (lambda kind, name: True)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Condition()
        self._changed = threading.Condition()  # notified whenever an instance changes state
        self._generation = 0
        self._in_flight: set[int] = set()
        self._history_cache: dict[str, list[dict[str, Any]]] = {}

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="durable-activity")
        self._thread = threading.Thread(target=self._scheduler_loop, name="durable-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._notify()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._in_flight.clear()

    def close(self) -> None:
        self.stop()
        self._store.close()

    # --- client API -----------------------------------------------------------------------------
    def start_new(self, name: str, instance_id: str | None, input_json: str | None) -> str:
        if not self._has_function("orchestrator", name):
            raise FunctionNotFoundError(
                f"No orchestrator function named {name!r}: start one of the functions declared with "
                "@app.orchestration_trigger (the function name, or its `orchestration=` name)."
            )
        _check_json("input", input_json)
        instance_id = instance_id or uuid.uuid4().hex
        with self._store.transaction() as conn:
            row = conn.execute("SELECT status FROM instances WHERE instance_id=?", (instance_id,)).fetchone()
            if row is not None and row["status"] in RUNNING_STATES:
                raise InstanceExistsError(
                    f"An instance with ID {instance_id!r} is already {row['status'].lower()}; wait for it, "
                    "terminate it, or start the new one with another instance id."
                )
            if row is not None:  # a finished instance id is reused, as in Azure
                self._forget(conn, instance_id)
            self._create_instance(conn, name, instance_id, input_json, parent=None)
        self._notify()
        return instance_id

    def raise_event(self, instance_id: str, event_name: str, data_json: str | None) -> None:
        if not event_name:
            raise ValueError("The event name must not be empty.")
        _check_json("event data", data_json)
        with self._store.transaction() as conn:
            row = conn.execute("SELECT status FROM instances WHERE instance_id=?", (instance_id,)).fetchone()
            if row is None:
                raise InstanceNotFound(f"No orchestration instance with ID {instance_id!r}.")
            if row["status"] in TERMINAL_STATES:
                return  # Azure drops events for finished instances
            conn.execute(
                "INSERT INTO buffered_events(instance_id, name, input) VALUES (?,?,?)",
                (instance_id, event_name, data_json),
            )
            self._deliver_buffered_events(conn, instance_id)
        self._notify()

    def terminate(self, instance_id: str, reason: str | None) -> None:
        with self._store.transaction() as conn:
            row = conn.execute("SELECT * FROM instances WHERE instance_id=?", (instance_id,)).fetchone()
            if row is None:
                raise InstanceNotFound(f"No orchestration instance with ID {instance_id!r}.")
            if row["status"] in TERMINAL_STATES:
                return
            conn.execute(
                "INSERT INTO inbox(instance_id, execution_id, event) VALUES (?,?,?)",
                (instance_id, row["execution_id"], json.dumps(h.execution_terminated(self._now(), reason))),
            )
        self._notify()

    def get_status(
        self,
        instance_id: str,
        *,
        show_history: bool = False,
        show_history_output: bool = False,
        show_input: bool = True,
    ) -> dict | None:
        row = self._store.instance(instance_id)
        if row is None:
            return None
        status = _status_json(row, show_input=show_input)
        if show_history:
            status["historyEvents"] = [
                _public_event(e, show_history_output) for e in self._store.history(instance_id)
            ]
        return status

    def list_instances(self, runtime_status: list[str] | None = None) -> list[dict]:
        with self._store.reading() as conn:
            if runtime_status:
                unknown = [s for s in runtime_status if s not in ALL_STATES]
                if unknown:
                    raise ValueError(f"Unknown runtimeStatus {unknown}; use any of {list(ALL_STATES)}.")
                marks = ",".join("?" * len(runtime_status))
                rows = conn.execute(
                    f"SELECT * FROM instances WHERE status IN ({marks}) ORDER BY created_time", runtime_status
                ).fetchall()
            else:
                rows = conn.execute("SELECT * FROM instances ORDER BY created_time").fetchall()
        return [_status_json(row, show_input=True) for row in rows]

    def wait_for_completion(self, instance_id: str, timeout: float) -> dict:
        deadline = self._now_monotonic() + timeout
        while True:
            # Never hold `_changed` while touching the store: the scheduler notifies after committing.
            with self._changed:
                generation = self._generation
            status = self.get_status(instance_id)
            if status is None:
                raise InstanceNotFound(f"No orchestration instance with ID {instance_id!r}.")
            if status["runtimeStatus"] in TERMINAL_STATES:
                return status
            left = deadline - self._now_monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"Instance {instance_id!r} is still {status['runtimeStatus']} after {timeout} s."
                )
            with self._changed:
                if self._generation == generation:
                    self._changed.wait(min(left, 1.0))

    # --- scheduler ------------------------------------------------------------------------------
    def _scheduler_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                busy = self._fire_due_timers()
                busy = self._dispatch_activities() or busy
                busy = self._run_next_episode() or busy
            except Exception:  # keep the host alive; the failing step stays in the DB and is retried
                log.exception("durable scheduler step failed")
                busy = False
                self._stopping.wait(0.5)
            if not busy:
                with self._wake:
                    self._wake.wait(self._idle_wait())

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def _idle_wait(self) -> float:
        with self._store.reading() as conn:
            row = conn.execute("SELECT MIN(due) AS due FROM work WHERE kind='timer'").fetchone()
        if row is None or row["due"] is None:
            return 1.0
        left = (h.parse_time(row["due"]) - self._now()).total_seconds()
        return max(0.0, min(left, 1.0))

    def _fire_due_timers(self) -> bool:
        now = self._now()
        with self._store.transaction() as conn:
            rows = conn.execute(
                "SELECT * FROM work WHERE kind='timer' AND due<=? ORDER BY due, id", (h.format_time(now),)
            ).fetchall()
            for row in rows:
                conn.execute("DELETE FROM work WHERE id=?", (row["id"],))
                fired = h.timer_fired(now, row["event_id"], h.parse_time(row["due"]))
                conn.execute(
                    "INSERT INTO inbox(instance_id, execution_id, event, retry) VALUES (?,?,?,?)",
                    (row["instance_id"], row["execution_id"], json.dumps(fired), row["retry"]),
                )
        return bool(rows)

    def _dispatch_activities(self) -> bool:
        if self._pool is None:
            return False
        # Under the store lock: a completion deletes its row and leaves `_in_flight` atomically, so a
        # committed activity is never dispatched again.
        with self._store.reading() as conn:
            rows = conn.execute("SELECT * FROM work WHERE kind='activity' ORDER BY id").fetchall()
            fresh = [dict(row) for row in rows if row["id"] not in self._in_flight]
            self._in_flight.update(item["id"] for item in fresh)
        for item in fresh:
            self._pool.submit(self._run_activity_item, item)
        return bool(fresh)

    def _run_activity_item(self, item: dict[str, Any]) -> None:
        try:
            try:
                result = self._run_activity(item["name"], item["input"])
                _check_json(f"result of activity {item['name']!r}", result)
                outcome = h.task_completed(self._now(), item["event_id"], result)
            except Exception as exc:  # the activity failed: recorded for the orchestrator to handle
                outcome = h.task_failed(
                    self._now(),
                    item["event_id"],
                    f"Activity function '{item['name']}' failed: {exc}",
                    f"{type(exc).__name__}: {exc}",
                )
            if self._stopping.is_set():
                return  # a stopping host must not commit: the work item re-runs on the next start
            is_retry_failure = bool(item["retry"]) and outcome["EventType"] == EventType.TaskFailed
            with self._store.transaction() as conn:
                gone = conn.execute("DELETE FROM work WHERE id=?", (item["id"],)).rowcount == 0
                if not gone:  # else: the instance finished or was terminated meanwhile
                    conn.execute(
                        "INSERT INTO inbox(instance_id, execution_id, event, retry) VALUES (?,?,?,?)",
                        (
                            item["instance_id"],
                            item["execution_id"],
                            json.dumps(outcome),
                            int(is_retry_failure),
                        ),
                    )
                self._in_flight.discard(item["id"])
        except Exception:
            log.exception("could not record the outcome of activity %s", item.get("name"))
        finally:
            self._in_flight.discard(item["id"])
            self._notify()

    # --- episodes -------------------------------------------------------------------------------
    def _run_next_episode(self) -> bool:
        with self._store.reading() as conn:
            row = conn.execute("SELECT instance_id FROM inbox ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return False
        self._run_episode(row["instance_id"])
        return True

    def _run_episode(self, instance_id: str) -> None:
        with self._store.reading() as conn:
            inst = conn.execute("SELECT * FROM instances WHERE instance_id=?", (instance_id,)).fetchone()
            rows = conn.execute(
                "SELECT * FROM inbox WHERE instance_id=? ORDER BY id", (instance_id,)
            ).fetchall()
        if inst is None or inst["status"] in TERMINAL_STATES:
            with self._store.transaction() as conn:
                conn.execute("DELETE FROM inbox WHERE instance_id=?", (instance_id,))
            return
        stale = [r["id"] for r in rows if r["execution_id"] != inst["execution_id"]]
        rows = [r for r in rows if r["execution_id"] == inst["execution_id"]]
        if stale or not rows:
            with self._store.transaction() as conn:
                conn.executemany("DELETE FROM inbox WHERE id=?", [(i,) for i in stale])
            return
        for r in rows:
            if json.loads(r["event"])["EventType"] == EventType.ExecutionTerminated:
                self._terminate_now(inst, json.loads(r["event"]))
                return

        # A with-retry failure or retry timer changes the SDK's numbering, so it only ever opens a batch.
        batch = [rows[0]]
        for r in rows[1:]:
            if r["retry"]:
                break
            batch.append(r)
        state = json.loads(inst["state"])
        now = self._now()
        episode = _Episode()
        try:
            retry_events = (
                self._prepare_retry_event(inst, state, batch[0], now, episode) if batch[0]["retry"] else []
            )
            result = self._call_orchestrator(inst, state, [json.loads(r["event"]) for r in batch], now)
            outcome = self._interpret(inst, state, result, now, episode)
        except OrchestrationFailure as failure:
            outcome = ("Failed", str(failure))
            retry_events = []
            if failure.sdk_state is not None:
                state["custom_status"] = failure.sdk_state.get("customStatus")
            elif "custom_status" not in state:
                state["custom_status"] = (
                    None if inst["custom_status"] is None else json.loads(inst["custom_status"])
                )
        self._commit_episode(inst, state, batch, now, episode, outcome, retry_events)

    def _history_of(self, instance_id: str) -> list[dict[str, Any]]:
        cached = self._history_cache.get(instance_id)
        if cached is None:
            cached = self._store.history(instance_id)
            for e in cached:
                e["IsPlayed"] = True
            self._history_cache[instance_id] = cached
        return cached

    def _call_orchestrator(
        self, inst: Any, state: dict[str, Any], new_events: list[dict[str, Any]], now: datetime
    ) -> dict[str, Any]:
        past = self._history_of(inst["instance_id"])
        payload = h.context_json(
            history=[*past, h.orchestrator_started(now), *new_events],
            instance_id=inst["instance_id"],
            input_json=inst["input"],
            is_replaying=bool(past),
            parent_instance_id=inst["parent_instance_id"],
        )
        try:
            raw = self._run_orchestrator(inst["name"], json.dumps(payload))
        except Exception as exc:
            message, sdk_state = _split_out_of_proc_error(str(exc))
            if not message and sdk_state is not None:
                message = str(sdk_state.get("error") or "")
            raise OrchestrationFailure(message or type(exc).__name__, sdk_state) from exc
        try:
            result = json.loads(raw) if isinstance(raw, str | bytes) else raw
        except ValueError as exc:
            raise OrchestrationFailure(
                f"The orchestrator returned something that is not the SDK's JSON state: {str(raw)[:200]!r}"
            ) from exc
        if not isinstance(result, dict) or "actions" not in result:
            raise OrchestrationFailure(
                f"The orchestrator returned something that is not the SDK's JSON state: {str(raw)[:200]!r}"
            )
        return result

    def _interpret(
        self, inst: Any, state: dict[str, Any], result: dict[str, Any], now: datetime, episode: _Episode
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
                self._schedule_activity(inst, state, action, event_id, now, episode)
            elif kind == ActionType.CreateTimer:
                fire_at = h.parse_time(action["fireAt"])
                episode.events.append(h.timer_created(now, event_id, fire_at))
                if not action.get("isCanceled"):
                    episode.work.append(
                        {"kind": "timer", "event_id": event_id, "due": h.format_time(fire_at)}
                    )
            elif kind == ActionType.WaitForExternalEvent:
                name = action["externalEventName"]
                state["waits"][name] = state["waits"].get(name, 0) + 1
            elif kind == ActionType.CallSubOrchestrator:
                self._schedule_sub_orchestration(inst, action, event_id, now, episode)
            elif kind == ActionType.ContinueAsNew:
                continue_input = (True, _action_input(action))
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
        self,
        inst: Any,
        state: dict[str, Any],
        action: dict[str, Any],
        event_id: int,
        now: datetime,
        episode: _Episode,
    ) -> None:
        name = action["functionName"]
        input_json = _action_input(action)
        episode.events.append(h.task_scheduled(now, event_id, name, input_json))
        retry = action.get("actionType") == ActionType.CallActivityWithRetry
        if retry:
            options = action.get("retryOptions") or {}
            state["retries"][str(event_id)] = {
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
        self._queue_activity(name, input_json, event_id, retry, now, episode)

    def _queue_activity(
        self, name: str, input_json: str | None, event_id: int, retry: bool, now: datetime, episode: _Episode
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
        self, inst: Any, action: dict[str, Any], event_id: int, now: datetime, episode: _Episode
    ) -> None:
        name = action["functionName"]
        child_id = action.get("instanceId") or f"{inst['instance_id']}:{event_id:04x}"
        input_json = _action_input(action)
        episode.events.append(h.sub_orchestration_created(now, event_id, name, child_id, input_json))
        if not self._has_function("orchestrator", name):
            message = f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator function."
            episode.inbox.append(
                ("self", "", h.sub_orchestration_failed(now, event_id, message, message), False)
            )
            return
        episode.new_instances.append(
            {
                "name": name,
                "instance_id": child_id,
                "input": input_json,
                "parent": (inst["instance_id"], inst["execution_id"], event_id),
            }
        )

    def _prepare_retry_event(
        self, inst: Any, state: dict[str, Any], row: Any, now: datetime, episode: _Episode
    ) -> list[dict[str, Any]]:
        """Assigns the id the SDK gives to a with-retry task's next timer or attempt (see module doc)."""
        event = json.loads(row["event"])
        if event["EventType"] == EventType.TaskFailed:
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

    def _commit_episode(
        self,
        inst: Any,
        state: dict[str, Any],
        batch: list[Any],
        now: datetime,
        episode: _Episode,
        outcome: tuple[str, str | None],
        retry_events: list[dict[str, Any]],
    ) -> None:
        status, value = outcome
        instance_id, execution_id = inst["instance_id"], inst["execution_id"]
        new_events = [
            h.orchestrator_started(now),
            *[json.loads(r["event"]) for r in batch],
            *retry_events,
            *episode.events,
        ]
        output = None
        if status == "Completed":
            output = value
            new_events.append(h.execution_completed(now, "Completed", value))
        elif status == "Failed":
            output = json.dumps(f"Orchestrator function '{inst['name']}' failed: {value}")
            new_events.append(h.execution_completed(now, "Failed", None, failure=value))
        new_events.append(h.orchestrator_completed(now))
        custom = state.pop("custom_status", None)
        custom_json = None if custom is None else json.dumps(custom)
        if status == "ContinuedAsNew":
            with self._store.transaction() as conn:
                conn.executemany("DELETE FROM inbox WHERE id=?", [(r["id"],) for r in batch])
                self._continue_as_new(conn, inst, value, custom_json, now)
            self._history_cache.pop(instance_id, None)
            self._notify_changed()
            return
        with self._store.transaction() as conn:
            conn.executemany("DELETE FROM inbox WHERE id=?", [(r["id"],) for r in batch])
            start = conn.execute(
                "SELECT COUNT(*) FROM history WHERE instance_id=?", (instance_id,)
            ).fetchone()[0]
            conn.executemany(
                "INSERT INTO history(instance_id, seq, event) VALUES (?,?,?)",
                [(instance_id, start + i, json.dumps(e)) for i, e in enumerate(new_events)],
            )
            for item in episode.work:
                conn.execute(
                    "INSERT INTO work(instance_id, execution_id, kind, event_id, name, input, due, retry) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    (
                        instance_id,
                        execution_id,
                        item["kind"],
                        item["event_id"],
                        item.get("name"),
                        item.get("input"),
                        item.get("due"),
                        item.get("retry", 0),
                    ),
                )
            for timer_id in episode.cancelled_timers:
                self._cancel_timer(conn, instance_id, execution_id, timer_id)
            for _target, _exec, event, retry in episode.inbox:
                conn.execute(
                    "INSERT INTO inbox(instance_id, execution_id, event, retry) VALUES (?,?,?,?)",
                    (instance_id, execution_id, json.dumps(event), int(retry)),
                )
            for child in episode.new_instances:
                self._start_child(conn, child)
            conn.execute(
                "UPDATE instances SET status=?, output=?, custom_status=?, last_updated_time=?, state=? "
                "WHERE instance_id=?",
                (
                    "Running" if status == "Running" else status,
                    output,
                    custom_json,
                    h.format_time(now),
                    json.dumps(state),
                    instance_id,
                ),
            )
            if status in TERMINAL_STATES:
                self._finish(conn, inst, status, output, value, now)
            else:
                self._deliver_buffered_events(conn, instance_id)
        cache = self._history_cache.get(instance_id)
        if status in TERMINAL_STATES:
            self._history_cache.pop(instance_id, None)
        elif cache is not None:
            for e in new_events:
                e["IsPlayed"] = True
            cache.extend(new_events)
        self._notify_changed()

    def _cancel_timer(self, conn: Any, instance_id: str, execution_id: str, timer_id: int) -> None:
        conn.execute(
            "DELETE FROM work WHERE instance_id=? AND execution_id=? AND kind='timer' AND event_id=?",
            (instance_id, execution_id, timer_id),
        )
        # A timer that fired but was not yet delivered must not reach the history either.
        for row in conn.execute(
            "SELECT id, event FROM inbox WHERE instance_id=? AND execution_id=?", (instance_id, execution_id)
        ).fetchall():
            event = json.loads(row["event"])
            if event["EventType"] == EventType.TimerFired and event["TimerId"] == timer_id:
                conn.execute("DELETE FROM inbox WHERE id=?", (row["id"],))

    def _continue_as_new(
        self, conn: Any, inst: Any, input_json: str | None, custom_json: str | None, now: datetime
    ) -> None:
        instance_id = inst["instance_id"]
        execution_id = uuid.uuid4().hex
        conn.execute("DELETE FROM history WHERE instance_id=?", (instance_id,))
        conn.execute("DELETE FROM work WHERE instance_id=?", (instance_id,))
        conn.execute("DELETE FROM inbox WHERE instance_id=?", (instance_id,))
        conn.execute(
            "UPDATE instances SET execution_id=?, status='Running', input=?, output=NULL, "
            "custom_status=?, last_updated_time=?, state=? WHERE instance_id=?",
            (
                execution_id,
                input_json,
                custom_json,
                h.format_time(now),
                json.dumps(_fresh_state()),
                instance_id,
            ),
        )
        started = h.execution_started(
            now, inst["name"], instance_id, execution_id, input_json, inst["parent_instance_id"]
        )
        conn.execute(
            "INSERT INTO inbox(instance_id, execution_id, event) VALUES (?,?,?)",
            (instance_id, execution_id, json.dumps(started)),
        )
        # Buffered events stay in buffered_events and are delivered once the new execution waits.

    def _terminate_now(self, inst: Any, terminated: dict[str, Any]) -> None:
        now = self._now()
        instance_id = inst["instance_id"]
        reason = terminated.get("Input")
        output = json.dumps(reason) if reason is not None else None
        with self._store.transaction() as conn:
            start = conn.execute(
                "SELECT COUNT(*) FROM history WHERE instance_id=?", (instance_id,)
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO history(instance_id, seq, event) VALUES (?,?,?)",
                (instance_id, start, json.dumps(terminated)),
            )
            conn.execute(
                "UPDATE instances SET status='Terminated', output=?, last_updated_time=? WHERE instance_id=?",
                (output, h.format_time(now), instance_id),
            )
            self._finish(conn, inst, "Terminated", output, reason, now)
        self._history_cache.pop(instance_id, None)
        self._notify_changed()

    def _finish(
        self, conn: Any, inst: Any, status: str, output: str | None, detail: str | None, now: datetime
    ) -> None:
        """Drops the finished instance's pending work and tells a parent orchestration."""
        instance_id = inst["instance_id"]
        conn.execute("DELETE FROM work WHERE instance_id=?", (instance_id,))
        conn.execute("DELETE FROM inbox WHERE instance_id=?", (instance_id,))
        conn.execute("DELETE FROM buffered_events WHERE instance_id=?", (instance_id,))
        parent = conn.execute(
            "SELECT parent_instance_id, parent_task_id, state FROM instances WHERE instance_id=?",
            (instance_id,),
        ).fetchone()
        if parent is None or parent["parent_instance_id"] is None:
            return
        parent_execution = json.loads(parent["state"]).get("parent_execution", "")
        task_id = parent["parent_task_id"]
        if status == "Completed":
            event = h.sub_orchestration_completed(now, task_id, output)
        else:
            message = f"Sub-orchestration '{inst['name']}' ({instance_id}) {status.lower()}: {detail}"
            event = h.sub_orchestration_failed(now, task_id, message, message)
        conn.execute(
            "INSERT INTO inbox(instance_id, execution_id, event) VALUES (?,?,?)",
            (parent["parent_instance_id"], parent_execution, json.dumps(event)),
        )

    def _start_child(self, conn: Any, child: dict[str, Any]) -> None:
        row = conn.execute(
            "SELECT status FROM instances WHERE instance_id=?", (child["instance_id"],)
        ).fetchone()
        if row is not None:
            self._forget(conn, child["instance_id"])
        self._create_instance(
            conn, child["name"], child["instance_id"], child["input"], parent=child["parent"]
        )

    def _create_instance(
        self,
        conn: Any,
        name: str,
        instance_id: str,
        input_json: str | None,
        parent: tuple[str, str, int] | None,
    ) -> None:
        now = self._now()
        execution_id = uuid.uuid4().hex
        state = _fresh_state()
        if parent is not None:
            state["parent_execution"] = parent[1]
        conn.execute(
            "INSERT INTO instances(instance_id, name, execution_id, status, input, parent_instance_id, "
            "parent_task_id, created_time, last_updated_time, state) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                instance_id,
                name,
                execution_id,
                "Pending",
                input_json,
                parent and parent[0],
                parent and parent[2],
                h.format_time(now),
                h.format_time(now),
                json.dumps(state),
            ),
        )
        started = h.execution_started(now, name, instance_id, execution_id, input_json, parent and parent[0])
        conn.execute(
            "INSERT INTO inbox(instance_id, execution_id, event) VALUES (?,?,?)",
            (instance_id, execution_id, json.dumps(started)),
        )

    def _forget(self, conn: Any, instance_id: str) -> None:
        for table in ("instances", "history", "inbox", "work", "buffered_events"):
            conn.execute(f"DELETE FROM {table} WHERE instance_id=?", (instance_id,))
        self._history_cache.pop(instance_id, None)

    def _deliver_buffered_events(self, conn: Any, instance_id: str) -> None:
        """Moves raised events into the inbox as far as the orchestrator waits for them (in order)."""
        row = conn.execute(
            "SELECT execution_id, state, status FROM instances WHERE instance_id=?", (instance_id,)
        ).fetchone()
        if row is None or row["status"] in TERMINAL_STATES:
            return
        state = json.loads(row["state"])
        changed = False
        for name, waits in state["waits"].items():
            open_waits = waits - state["delivered"].get(name, 0)
            if open_waits <= 0:
                continue
            events = conn.execute(
                "SELECT * FROM buffered_events WHERE instance_id=? AND name=? ORDER BY id LIMIT ?",
                (instance_id, name, open_waits),
            ).fetchall()
            for ev in events:
                conn.execute("DELETE FROM buffered_events WHERE id=?", (ev["id"],))
                raised = h.event_raised(self._now(), name, ev["input"])
                conn.execute(
                    "INSERT INTO inbox(instance_id, execution_id, event) VALUES (?,?,?)",
                    (instance_id, row["execution_id"], json.dumps(raised)),
                )
                state["delivered"][name] = state["delivered"].get(name, 0) + 1
                changed = True
        if changed:
            conn.execute("UPDATE instances SET state=? WHERE instance_id=?", (json.dumps(state), instance_id))

    # --- helpers --------------------------------------------------------------------------------
    def _notify_changed(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def _now(self) -> datetime:
        now = self._clock()
        return now if now.tzinfo else now.replace(tzinfo=UTC)

    @staticmethod
    def _now_monotonic() -> float:
        import time

        return time.monotonic()


def _fresh_state() -> dict[str, Any]:
    return {"next_id": 0, "sigs": [], "leaf_ids": [], "waits": {}, "delivered": {}, "retries": {}}


def _action_input(action: dict[str, Any]) -> str | None:
    """The SDK serialises action inputs itself (`df_dumps`), so `input` is already a JSON string."""
    value = action.get("input")
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def _split_out_of_proc_error(text: str) -> tuple[str, dict[str, Any] | None]:
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


def _check_json(what: str, text: str | None) -> None:
    if text is None:
        return
    try:
        json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f'The {what} must be a JSON document (e.g. \'{{"ticker": "MSFT"}}\' or \'"text"\'), '
            f"got {str(text)[:80]!r}."
        ) from exc


def _status_json(row: Any, *, show_input: bool) -> dict[str, Any]:
    def load(text: str | None) -> Any:
        return None if text is None else json.loads(text)

    return {
        "name": row["name"],
        "instanceId": row["instance_id"],
        "runtimeStatus": row["status"],
        "input": load(row["input"]) if show_input else None,
        "customStatus": load(row["custom_status"]),
        "output": load(row["output"]),
        "createdTime": _public_time(row["created_time"]),
        "lastUpdatedTime": _public_time(row["last_updated_time"]),
    }


def _public_time(text: str) -> str:
    # the HTTP API writes whole seconds: "2024-05-01T12:00:00Z"
    return h.parse_time(text).strftime("%Y-%m-%dT%H:%M:%SZ")


def _public_event(event: dict[str, Any], show_output: bool) -> dict[str, Any]:
    """A history event as the HTTP API's showHistory lists it (names instead of numbers)."""
    public: dict[str, Any] = {
        "EventType": EventType(event["EventType"]).name,
        "EventId": event["EventId"],
        "Timestamp": event["Timestamp"],
    }
    for key in ("Name", "TaskScheduledId", "TimerId", "FireAt", "Reason", "OrchestrationStatus"):
        if event.get(key) is not None:
            public[key] = event[key]
    if show_output:
        for key in ("Input", "Result", "Details"):
            if event.get(key) is not None:
                public[key] = event[key]
    return public
