"""Instance rows and their queues, changed inside a caller's transaction: create, forget, finish (and tell
the parent), continue-as-new, cancel a timer, deliver buffered external events, append history."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from . import history as h
from .history import EventType
from .model import TERMINAL_STATES, fresh_state


def append_history(conn: Any, instance_id: str, events: list[dict[str, Any]]) -> None:
    start = conn.execute("SELECT COUNT(*) FROM history WHERE instance_id=?", (instance_id,)).fetchone()[0]
    conn.executemany(
        "INSERT INTO history(instance_id, seq, event) VALUES (?,?,?)",
        [(instance_id, start + i, json.dumps(e)) for i, e in enumerate(events)],
    )


def to_inbox(
    conn: Any, instance_id: str, execution_id: str, event: dict[str, Any], retry: bool = False
) -> None:
    conn.execute(
        "INSERT INTO inbox(instance_id, execution_id, event, retry) VALUES (?,?,?,?)",
        (instance_id, execution_id, json.dumps(event), int(retry)),
    )


def create_instance(
    conn: Any,
    now: datetime,
    name: str,
    instance_id: str,
    input_json: str | None,
    parent: tuple[str, str, int] | None,
    version: str,
    *,
    parent_retries: bool = False,
) -> None:
    execution_id = uuid.uuid4().hex
    state = fresh_state()
    if parent is not None:
        state["parent_execution"] = parent[1]
        state["parent_retries"] = parent_retries
    conn.execute(
        "INSERT INTO instances(instance_id, name, execution_id, status, input, parent_instance_id, "
        "parent_task_id, created_time, last_updated_time, state, version) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
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
            version,
        ),
    )
    started = h.execution_started(
        now, name, instance_id, execution_id, input_json, parent and parent[0], version=version
    )
    to_inbox(conn, instance_id, execution_id, started)


def forget(conn: Any, instance_id: str) -> None:
    """Removes every trace of an instance (a reused id, a purge)."""
    for table in ("instances", "history", "inbox", "work", "buffered_events"):
        conn.execute(f"DELETE FROM {table} WHERE instance_id=?", (instance_id,))


def start_child(conn: Any, now: datetime, child: dict[str, Any]) -> None:
    if conn.execute("SELECT 1 FROM instances WHERE instance_id=?", (child["instance_id"],)).fetchone():
        forget(conn, child["instance_id"])
    create_instance(
        conn,
        now,
        child["name"],
        child["instance_id"],
        child["input"],
        child["parent"],
        child["version"],
        parent_retries=child.get("parent_retries", False),
    )


def finish(conn: Any, inst: Any, status: str, output: str | None, detail: str | None, now: datetime) -> None:
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
    child_state = json.loads(parent["state"])
    task_id = parent["parent_task_id"]
    if status == "Completed":
        event = h.sub_orchestration_completed(now, task_id, output)
    else:
        message = f"Sub-orchestration '{inst['name']}' ({instance_id}) {status.lower()}: {detail}"
        event = h.sub_orchestration_failed(now, task_id, message, message)
    # the failure of a with-retry attempt opens the parent's next batch (see actions.py)
    retry_failure = status != "Completed" and bool(child_state.get("parent_retries"))
    to_inbox(
        conn, parent["parent_instance_id"], child_state.get("parent_execution", ""), event, retry_failure
    )


def continue_as_new(
    conn: Any, inst: Any, input_json: str | None, custom_json: str | None, now: datetime
) -> None:
    """A fresh execution of the same instance id (and version); buffered events stay buffered."""
    instance_id = inst["instance_id"]
    execution_id = uuid.uuid4().hex
    conn.execute("DELETE FROM history WHERE instance_id=?", (instance_id,))
    conn.execute("DELETE FROM work WHERE instance_id=?", (instance_id,))
    conn.execute("DELETE FROM inbox WHERE instance_id=?", (instance_id,))
    state = fresh_state()
    for key in ("parent_execution", "parent_retries"):  # a sub-orchestration still reports to its parent
        if key in (old := json.loads(inst["state"])):
            state[key] = old[key]
    conn.execute(
        "UPDATE instances SET execution_id=?, status='Running', input=?, output=NULL, "
        "custom_status=?, last_updated_time=?, state=? WHERE instance_id=?",
        (execution_id, input_json, custom_json, h.format_time(now), json.dumps(state), instance_id),
    )
    started = h.execution_started(
        now,
        inst["name"],
        instance_id,
        execution_id,
        input_json,
        inst["parent_instance_id"],
        version=inst["version"] or "",
    )
    to_inbox(conn, instance_id, execution_id, started)


def cancel_timer(conn: Any, instance_id: str, execution_id: str, timer_id: int) -> None:
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


def deliver_buffered_events(conn: Any, instance_id: str, now: datetime) -> None:
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
            to_inbox(conn, instance_id, row["execution_id"], h.event_raised(now, name, ev["input"]))
            state["delivered"][name] = state["delivered"].get(name, 0) + 1
            changed = True
    if changed:
        conn.execute("UPDATE instances SET state=? WHERE instance_id=?", (json.dumps(state), instance_id))
