"""The local durable engine: drives the real Durable Functions SDK from a SQLite history.

One scheduler thread fires due timers (`scheduler`), hands activities to a thread pool and runs
orchestrator episodes (`episodes`, which turn the SDK's actions into work with `actions`). Every step
is one SQLite transaction: an episode commits its history events, the inbox rows it consumed, the
work it scheduled and the instance's new status together (`store`, `instances`).

This module is the engine's face: its lifecycle and the client API the host's Durable HTTP API calls
(start with a version, raise events, terminate, suspend, resume, purge, status queries).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import history as h
from . import instances
from .actions import ActionPlanner
from .episodes import EpisodeRunner
from .model import (
    ALL_STATES,
    TERMINAL_STATES,
    FunctionNotFoundError,
    InstanceExistsError,
    InstanceGone,
    InstanceNotFound,
    InstanceStillRunning,
    check_json,
    public_event,
    status_json,
)
from .scheduler import WorkScheduler
from .store import DurableStoreUnavailable, Store

log = logging.getLogger(__name__)


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
        default_version: str = "",
    ) -> None:
        """`default_version` is host.json's `extensions.durableTask.defaultVersion`: the version of every
        instance (and sub-orchestration) started without an explicit one."""
        self._store = Store(Path(db_path))
        self._has_function = has_function or (lambda kind, name: True)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._max_workers = max_workers
        self.default_version = default_version
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Condition()
        self._changed = threading.Condition()  # notified whenever an instance changes state
        self._generation = 0
        self._work = WorkScheduler(self._store, run_activity, self._now, self._stopping, self._notify)
        self._episodes = EpisodeRunner(
            self._store,
            run_orchestrator,
            ActionPlanner(self._has_function, default_version),
            self._now,
            self._notify_changed,
        )

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._work.start(self._max_workers)
        self._thread = threading.Thread(target=self._scheduler_loop, name="durable-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._notify()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._work.stop()

    def close(self) -> None:
        self.stop()
        self._store.close()

    # --- client API -----------------------------------------------------------------------------
    def start_new(
        self, name: str, instance_id: str | None, input_json: str | None, version: str | None = None
    ) -> str:
        """Starts an orchestration; `version` None means host.json's defaultVersion (as the extension)."""
        if not self._has_function("orchestrator", name):
            raise FunctionNotFoundError(
                f"No orchestrator function named {name!r}: start one of the functions declared with "
                "@app.orchestration_trigger (the function name, or its `orchestration=` name)."
            )
        check_json("input", input_json)
        instance_id = instance_id or uuid.uuid4().hex
        with self._store.transaction() as conn:
            row = conn.execute("SELECT status FROM instances WHERE instance_id=?", (instance_id,)).fetchone()
            if row is not None and row["status"] not in TERMINAL_STATES:
                raise InstanceExistsError(
                    f"An instance with ID {instance_id!r} is already {row['status'].lower()}; wait for it, "
                    "terminate it, or start the new one with another instance id."
                )
            if row is not None:  # a finished instance id is reused, as in Azure
                instances.forget(conn, instance_id)
                self._episodes.forget_cached(instance_id)
            chosen = self.default_version if version is None else version
            instances.create_instance(conn, self._now(), name, instance_id, input_json, None, chosen)
        self._notify()
        return instance_id

    def raise_event(self, instance_id: str, event_name: str, data_json: str | None) -> None:
        if not event_name:
            raise ValueError("The event name must not be empty.")
        check_json("event data", data_json)
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
            instances.deliver_buffered_events(conn, instance_id, self._now())
        self._notify()

    def terminate(self, instance_id: str, reason: str | None) -> None:
        self._control(instance_id, h.execution_terminated(self._now(), reason), quiet_when_finished=True)

    def suspend(self, instance_id: str, reason: str | None) -> None:
        """Parks a live instance: it shows Suspended, runs no episode, and keeps what arrives meanwhile.

        Raises InstanceGone for a finished instance. Asynchronous, as in Azure: the status changes
        once the scheduler has taken the request (in order with the instance's other events)."""
        self._control(instance_id, h.execution_suspended(self._now(), reason))

    def resume(self, instance_id: str, reason: str | None) -> None:
        """Lets a suspended instance go on (a no-op for a running one); InstanceGone when finished."""
        self._control(instance_id, h.execution_resumed(self._now(), reason))

    def purge(self, instance_id: str) -> int:
        """Deletes a finished instance and its history; returns how many instances were deleted (0 or 1).

        Raises InstanceStillRunning for a live (pending, running or suspended) instance."""
        with self._store.transaction() as conn:
            row = conn.execute("SELECT status FROM instances WHERE instance_id=?", (instance_id,)).fetchone()
            if row is None:
                return 0
            if row["status"] not in TERMINAL_STATES:
                raise InstanceStillRunning(
                    "Only orchestrations in a terminal state can be purged, but the orchestration with "
                    f"instance ID {instance_id} has status {row['status']}: wait for it or terminate it first."
                )
            instances.forget(conn, instance_id)
        self._episodes.forget_cached(instance_id)
        self._notify_changed()
        return 1

    def _control(self, instance_id: str, event: dict[str, Any], *, quiet_when_finished: bool = False) -> None:
        with self._store.transaction() as conn:
            row = conn.execute("SELECT * FROM instances WHERE instance_id=?", (instance_id,)).fetchone()
            if row is None:
                raise InstanceNotFound(f"No orchestration instance with ID {instance_id!r}.")
            if row["status"] in TERMINAL_STATES:
                if quiet_when_finished:
                    return
                raise InstanceGone(f"Instance {instance_id!r} is already {row['status']}.")
            instances.to_inbox(conn, instance_id, row["execution_id"], event)
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
        status = status_json(row, show_input=show_input)
        if show_history:
            status["historyEvents"] = [
                public_event(e, show_history_output) for e in self._store.history(instance_id)
            ]
        return status

    def list_instances(
        self,
        runtime_status: list[str] | None = None,
        *,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
    ) -> list[dict]:
        """Instances by creation time, filtered as the HTTP API's query (statuses, creation window)."""
        where, params = _filters(runtime_status, created_from, created_to)
        with self._store.reading() as conn:
            rows = conn.execute(f"SELECT * FROM instances{where} ORDER BY created_time", params).fetchall()
        return [status_json(row, show_input=True) for row in rows]

    def purge_matching(
        self,
        created_from: datetime,
        created_to: datetime | None = None,
        runtime_status: list[str] | None = None,
    ) -> int:
        """Deletes the finished instances created in the window (of the given statuses); returns how many.

        Only Completed, Failed or Terminated instances are purged: asking for another status is refused
        with ValueError (live instances are never purged, as with `purge`)."""
        statuses = runtime_status or list(TERMINAL_STATES)
        live = [s for s in statuses if s in ALL_STATES and s not in TERMINAL_STATES]
        if live:
            raise ValueError(
                f"Only orchestrations in a terminal state can be purged; runtimeStatus {live} is not one: "
                f"use any of {list(TERMINAL_STATES)}, or terminate those instances first."
            )
        where, params = _filters(statuses, created_from, created_to)
        with self._store.transaction() as conn:
            ids = [
                r["instance_id"] for r in conn.execute(f"SELECT instance_id FROM instances{where}", params)
            ]
            for instance_id in ids:
                instances.forget(conn, instance_id)
        for instance_id in ids:
            self._episodes.forget_cached(instance_id)
        self._notify_changed()
        return len(ids)

    def wait_for_completion(self, instance_id: str, timeout: float) -> dict:
        return self.wait_for_status(instance_id, TERMINAL_STATES, timeout)

    def wait_for_status(self, instance_id: str, statuses: tuple[str, ...], timeout: float) -> dict:
        """Blocks until the instance is in one of `statuses` (TimeoutError after `timeout` s)."""
        deadline = time.monotonic() + timeout
        while True:
            # Never hold `_changed` while touching the store: the scheduler notifies after committing.
            with self._changed:
                generation = self._generation
            status = self.get_status(instance_id)
            if status is None:
                raise InstanceNotFound(f"No orchestration instance with ID {instance_id!r}.")
            if status["runtimeStatus"] in statuses:
                return status
            left = deadline - time.monotonic()
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
                busy = self._work.fire_due_timers()
                busy = self._work.dispatch_activities() or busy
                busy = self._episodes.run_next() or busy
            except Exception:  # keep the host alive; the failing step stays in the DB and is retried
                log.exception("durable scheduler step failed")
                busy = False
                self._stopping.wait(0.5)
            if not busy:
                try:
                    idle = self._work.idle_wait()
                except DurableStoreUnavailable as exc:  # the scheduler lives on: the file may be restored
                    log.error("durable scheduler: %s", exc)
                    self._stopping.wait(5.0)
                    continue
                with self._wake:
                    self._wake.wait(idle)

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def _notify_changed(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def _now(self) -> datetime:
        now = self._clock()
        return now if now.tzinfo else now.replace(tzinfo=UTC)


def _filters(
    runtime_status: list[str] | None, created_from: datetime | None, created_to: datetime | None
) -> tuple[str, list[str]]:
    """A WHERE clause (or "") and its parameters for the HTTP API's instance filters."""
    clauses: list[str] = []
    params: list[str] = []
    if runtime_status:
        unknown = [s for s in runtime_status if s not in ALL_STATES]
        if unknown:
            raise ValueError(f"Unknown runtimeStatus {unknown}; use any of {list(ALL_STATES)}.")
        clauses.append(f"status IN ({','.join('?' * len(runtime_status))})")
        params.extend(runtime_status)
    # created_time is stored as format_time's fixed-width UTC text, so text order is time order
    if created_from is not None:
        clauses.append("created_time >= ?")
        params.append(h.format_time(created_from))
    if created_to is not None:
        clauses.append("created_time <= ?")
        params.append(h.format_time(created_to))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
