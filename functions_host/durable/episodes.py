"""The replay driver: one orchestrator episode = the instance's history plus its new inbox events, sent
to the SDK, whose actions are committed with the history in one transaction.

Control events go through the same inbox, so they are ordered with everything else: a terminate ends
the instance at once; a suspend parks it (its inbox fills but no episode runs) until a resume.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from . import history as h
from . import instances
from .actions import ActionPlanner, split_out_of_proc_error
from .history import EventType
from .model import SUSPENDED, TERMINAL_STATES, Episode, OrchestrationFailure
from .store import Store

log = logging.getLogger(__name__)

_CONTROL = (EventType.ExecutionSuspended, EventType.ExecutionResumed)
# Inbox rows an episode may take now: every row of a live instance that is not suspended, and the
# terminate and resume rows of a suspended one.
_NEXT_INBOX_ROW = f"""
SELECT inbox.instance_id FROM inbox JOIN instances USING (instance_id)
WHERE instances.status != '{SUSPENDED}'
   OR json_extract(inbox.event, '$.EventType') IN ({int(EventType.ExecutionTerminated)}, {int(EventType.ExecutionResumed)})
ORDER BY inbox.id LIMIT 1
"""
# Rows whose instance is gone (e.g. a sub-orchestration's result for a purged parent): dropped.
_ORPHAN_INBOX_ROW = (
    "SELECT instance_id FROM inbox WHERE instance_id NOT IN (SELECT instance_id FROM instances) LIMIT 1"
)


class EpisodeRunner:
    """Runs episodes on the scheduler thread (one at a time), caching each live instance's history."""

    def __init__(
        self,
        store: Store,
        run_orchestrator: Callable[[str, str], str],
        planner: ActionPlanner,
        now: Callable[[], datetime],
        changed: Callable[[], None],
    ) -> None:
        self._store = store
        self._run_orchestrator = run_orchestrator
        self._planner = planner
        self._now = now
        self._changed = changed
        self._history_cache: dict[str, list[dict[str, Any]]] = {}

    def forget_cached(self, instance_id: str) -> None:
        self._history_cache.pop(instance_id, None)

    def run_next(self) -> bool:
        """Runs the episode (or control step) of the instance with the oldest runnable inbox row."""
        with self._store.reading() as conn:
            row = conn.execute(_NEXT_INBOX_ROW).fetchone() or conn.execute(_ORPHAN_INBOX_ROW).fetchone()
        if row is None:
            return False
        self._run(row["instance_id"])
        return True

    def _run(self, instance_id: str) -> None:
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
        events = [json.loads(r["event"]) for r in rows]
        for event in events:
            if event["EventType"] == EventType.ExecutionTerminated:
                self._terminate_now(inst, event)
                return
        if inst["status"] == SUSPENDED:
            resume = next(
                (
                    (r, e)
                    for r, e in zip(rows, events, strict=True)
                    if e["EventType"] == EventType.ExecutionResumed
                ),
                None,
            )
            if resume is not None:  # else the rows wait for the resume
                self._control(inst, *resume)
            return
        if events[0]["EventType"] in _CONTROL:
            self._control(inst, rows[0], events[0])
            return
        # A with-retry failure or retry timer changes the SDK's numbering, so it only ever opens a batch;
        # a control event closes one.
        batch = [rows[0]]
        for r, e in zip(rows[1:], events[1:], strict=True):
            if r["retry"] or e["EventType"] in _CONTROL:
                break
            batch.append(r)
        self._episode(inst, batch)

    def _episode(self, inst: Any, batch: list[Any]) -> None:
        state = json.loads(inst["state"])
        now = self._now()
        episode = Episode()
        try:
            retry_events = (
                self._planner.prepare_retry_event(inst, state, json.loads(batch[0]["event"]), now, episode)
                if batch[0]["retry"]
                else []
            )
            result = self._call_orchestrator(inst, [json.loads(r["event"]) for r in batch], now)
            outcome = self._planner.interpret(inst, state, result, now, episode)
        except OrchestrationFailure as failure:
            outcome = ("Failed", str(failure))
            retry_events = []
            if failure.sdk_state is not None:
                state["custom_status"] = failure.sdk_state.get("customStatus")
            elif "custom_status" not in state:
                state["custom_status"] = (
                    None if inst["custom_status"] is None else json.loads(inst["custom_status"])
                )
        self._commit(inst, state, batch, now, episode, outcome, retry_events)

    def _history_of(self, instance_id: str) -> list[dict[str, Any]]:
        cached = self._history_cache.get(instance_id)
        if cached is None:
            cached = self._store.history(instance_id)
            for e in cached:
                e["IsPlayed"] = True
            self._history_cache[instance_id] = cached
        return cached

    def _call_orchestrator(
        self, inst: Any, new_events: list[dict[str, Any]], now: datetime
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
            message, sdk_state = split_out_of_proc_error(str(exc))
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

    def _commit(
        self,
        inst: Any,
        state: dict[str, Any],
        batch: list[Any],
        now: datetime,
        episode: Episode,
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
                instances.continue_as_new(conn, inst, value, custom_json, now)
            self._history_cache.pop(instance_id, None)
            self._changed()
            return
        with self._store.transaction() as conn:
            conn.executemany("DELETE FROM inbox WHERE id=?", [(r["id"],) for r in batch])
            instances.append_history(conn, instance_id, new_events)
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
                instances.cancel_timer(conn, instance_id, execution_id, timer_id)
            for _target, _exec, event, retry in episode.inbox:
                instances.to_inbox(conn, instance_id, execution_id, event, retry)
            for child in episode.new_instances:
                instances.start_child(conn, now, child)
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
                instances.finish(conn, inst, status, output, value, now)
            else:
                instances.deliver_buffered_events(conn, instance_id, now)
        cache = self._history_cache.get(instance_id)
        if status in TERMINAL_STATES:
            self._history_cache.pop(instance_id, None)
        elif cache is not None:
            for e in new_events:
                e["IsPlayed"] = True
            cache.extend(new_events)
        self._changed()

    def _control(self, inst: Any, row: Any, event: dict[str, Any]) -> None:
        """Applies a suspend or resume: recorded in the history (the SDK skips such events on replay)."""
        instance_id = inst["instance_id"]
        suspend = event["EventType"] == EventType.ExecutionSuspended
        is_suspended = inst["status"] == SUSPENDED
        with self._store.transaction() as conn:
            conn.execute("DELETE FROM inbox WHERE id=?", (row["id"],))
            if suspend == is_suspended:
                return  # suspending a suspended instance, or resuming a running one, changes nothing
            instances.append_history(conn, instance_id, [event])
            status = SUSPENDED if suspend else "Running"
            conn.execute(
                "UPDATE instances SET status=?, last_updated_time=? WHERE instance_id=?",
                (status, h.format_time(self._now()), instance_id),
            )
        cache = self._history_cache.get(instance_id)
        if cache is not None:
            cache.append({**event, "IsPlayed": True})
        self._changed()

    def _terminate_now(self, inst: Any, terminated: dict[str, Any]) -> None:
        now = self._now()
        instance_id = inst["instance_id"]
        reason = terminated.get("Input")
        output = json.dumps(reason) if reason is not None else None
        with self._store.transaction() as conn:
            instances.append_history(conn, instance_id, [terminated])
            conn.execute(
                "UPDATE instances SET status='Terminated', output=?, last_updated_time=? WHERE instance_id=?",
                (output, h.format_time(now), instance_id),
            )
            instances.finish(conn, inst, "Terminated", output, reason, now)
        self._history_cache.pop(instance_id, None)
        self._changed()
