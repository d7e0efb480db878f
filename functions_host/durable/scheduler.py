"""The work queue: fires due durable timers and runs activities on a thread pool.

An activity's completion is committed in the same transaction that deletes its work item, so a
committed completion never runs again, while an activity that was running at a crash runs again on
restart (at-least-once, as in Azure).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from . import history as h
from .history import EventType
from .instances import to_inbox
from .model import check_json
from .store import Store

log = logging.getLogger(__name__)


class WorkScheduler:
    def __init__(
        self,
        store: Store,
        run_activity: Callable[[str, str | None], str],
        now: Callable[[], datetime],
        stopping: threading.Event,
        wake: Callable[[], None],
    ) -> None:
        self._store = store
        self._run_activity = run_activity
        self._now = now
        self._stopping = stopping
        self._wake = wake
        self._in_flight: set[int] = set()
        self.pool: ThreadPoolExecutor | None = None

    def start(self, max_workers: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="durable-activity")

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        self._in_flight.clear()

    def idle_wait(self) -> float:
        """Seconds until the next timer is due (at most 1)."""
        with self._store.reading() as conn:
            row = conn.execute("SELECT MIN(due) AS due FROM work WHERE kind='timer'").fetchone()
        if row is None or row["due"] is None:
            return 1.0
        left = (h.parse_time(row["due"]) - self._now()).total_seconds()
        return max(0.0, min(left, 1.0))

    def fire_due_timers(self) -> bool:
        now = self._now()
        with self._store.transaction() as conn:
            rows = conn.execute(
                "SELECT * FROM work WHERE kind='timer' AND due<=? ORDER BY due, id", (h.format_time(now),)
            ).fetchall()
            for row in rows:
                conn.execute("DELETE FROM work WHERE id=?", (row["id"],))
                fired = h.timer_fired(now, row["event_id"], h.parse_time(row["due"]))
                to_inbox(conn, row["instance_id"], row["execution_id"], fired, bool(row["retry"]))
        return bool(rows)

    def dispatch_activities(self) -> bool:
        if self.pool is None:
            return False
        # Under the store lock: a completion deletes its row and leaves `_in_flight` atomically, so a
        # committed activity is never dispatched again.
        with self._store.reading() as conn:
            rows = conn.execute("SELECT * FROM work WHERE kind='activity' ORDER BY id").fetchall()
            fresh = [dict(row) for row in rows if row["id"] not in self._in_flight]
            self._in_flight.update(item["id"] for item in fresh)
        for item in fresh:
            self.pool.submit(self._run_activity_item, item)
        return bool(fresh)

    def _run_activity_item(self, item: dict[str, Any]) -> None:
        try:
            try:
                result = self._run_activity(item["name"], item["input"])
                check_json(f"result of activity {item['name']!r}", result)
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
                    to_inbox(conn, item["instance_id"], item["execution_id"], outcome, is_retry_failure)
                self._in_flight.discard(item["id"])
        except Exception:
            log.exception("could not record the outcome of activity %s", item.get("name"))
        finally:
            self._in_flight.discard(item["id"])
            self._wake()
