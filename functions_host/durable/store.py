"""SQLite persistence for the local durable engine: instances, history, inbox and work queue.

Every state change happens in one transaction (`Store.transaction()`), so a SIGKILL leaves either
the state before or the state after a step, never half of it. WAL mode lets readers (status
queries, tests polling the file) run while the engine writes.

A store that once held history leaves a marker beside it (`<db>.created`). Opening refuses, with a message
naming the file and what to do, a file that is not SQLite, and an empty file or one without the tables
while the marker says history was there: history is never dropped silently.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    instance_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT,
    output TEXT,
    custom_status TEXT,
    parent_instance_id TEXT,
    parent_task_id INTEGER,
    created_time TEXT NOT NULL,
    last_updated_time TEXT NOT NULL,
    state TEXT NOT NULL,
    version TEXT
);
CREATE INDEX IF NOT EXISTS instances_status ON instances(status);
-- the current execution's history; continue_as_new starts a fresh one
CREATE TABLE IF NOT EXISTS history (
    instance_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (instance_id, seq)
);
-- new events waiting for the next orchestrator episode
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    event TEXT NOT NULL,
    retry INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS inbox_instance ON inbox(instance_id, id);
-- activities to run and timers to fire
CREATE TABLE IF NOT EXISTS work (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    name TEXT,
    input TEXT,
    due TEXT,
    retry INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS work_kind ON work(kind, due);
-- external events raised before the orchestrator waits for them, in arrival order
CREATE TABLE IF NOT EXISTS buffered_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    name TEXT NOT NULL,
    input TEXT
);
CREATE INDEX IF NOT EXISTS buffered_instance ON buffered_events(instance_id, name, id);
"""


_TABLES = {"instances", "history", "inbox", "work", "buffered_events"}


class DurableStoreError(RuntimeError):
    """The durable store's file cannot be used; the message names the file and what to do."""


class DurableStoreUnavailable(DurableStoreError):
    """The store's file failed while the host ran (made read-only, replaced, corrupted): the Durable HTTP
    API answers 503 with this message instead of a raw SQLite error."""


def unavailable(db_path: Path, exc: sqlite3.Error) -> DurableStoreUnavailable | None:
    """The DurableStoreUnavailable a SQLite failure on the store means, or None when it is not about the
    file (a constraint or programming error is a bug to see)."""
    text = str(exc)
    marker = marker_path(db_path)
    if isinstance(exc, sqlite3.OperationalError):
        if "locked" in text or "busy" in text:
            advice = "another process holds it: retry in a moment"
        else:
            advice = (
                "make the state dir and the file writable by the host (permissions, free disk space), "
                "then retry"
            )
        return DurableStoreUnavailable(f"the durable store {db_path} cannot be used ({text}); {advice}")
    if type(exc) is sqlite3.DatabaseError:  # "file is not a database", "database disk image is malformed"
        return DurableStoreUnavailable(
            f"the durable store {db_path} is corrupt ({text}); stop the host, restore the file from a "
            f"backup, or move it aside and delete {marker.name} to start with no history"
        )
    return None


def marker_path(db_path: Path) -> Path:
    return Path(db_path).with_name(Path(db_path).name + ".created")


class Store:
    """One SQLite connection shared by the engine's threads behind a lock (writes are tiny)."""

    def __init__(self, db_path: Path) -> None:
        db_path = Path(db_path)
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self.path = db_path
        self._lock = threading.RLock()
        marker = marker_path(db_path)
        size = db_path.stat().st_size if db_path.exists() else None
        self._conn = sqlite3.connect(
            str(db_path), check_same_thread=False, isolation_level=None, timeout=30.0
        )
        try:
            self._conn.row_factory = sqlite3.Row
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                tables = {
                    row[0] for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                }
            except sqlite3.DatabaseError as exc:
                raise DurableStoreError(
                    f"{db_path} is not a usable SQLite database ({exc}), so the orchestrations' durable "
                    f"history cannot be read. Restore the file from a backup, or move it away (e.g. to "
                    f"{db_path.name}.corrupt) and delete {marker.name} to start with no history."
                ) from None
            if not tables >= _TABLES and marker.exists():
                what = (
                    "is missing"
                    if size is None
                    else "is empty"
                    if size == 0
                    else f"lacks the tables {', '.join(sorted(_TABLES - tables))}"
                )
                raise DurableStoreError(
                    f"{db_path} {what}, but this state dir held durable history (see {marker}); refusing to "
                    "start with every orchestration's history gone. Restore the file from a backup, or "
                    f"delete {marker} to start with no history."
                )
            # FULL: a committed activity completion must survive a power cut too, not only a SIGKILL.
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
            self._migrate()
        except BaseException:
            self._conn.close()
            raise
        if not marker.exists():
            tmp = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"created": datetime.now(UTC).isoformat(), "db": db_path.name}))
            os.replace(tmp, marker)

    def _migrate(self) -> None:
        """Brings a store written by an older host up to date (it may hold live instances)."""
        columns = {row["name"] for row in self._conn.execute("PRAGMA table_info(instances)")}
        if "version" not in columns:  # orchestration versions: instances before them have ""
            self._conn.execute("ALTER TABLE instances ADD COLUMN version TEXT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _named_failures(self) -> Iterator[None]:
        """A SQLite failure about the file becomes DurableStoreUnavailable naming it (503, not a raw 500)."""
        try:
            yield
        except sqlite3.Error as exc:
            named = unavailable(self.path, exc)
            if named is None:
                raise
            raise named from exc

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._named_failures():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                if self._conn.in_transaction:  # a failed statement may have rolled back already
                    with suppress(sqlite3.Error):  # the first failure is the one to report
                        self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._named_failures():
            yield self._conn

    # --- queries used outside transactions -------------------------------------------------------
    def instance(self, instance_id: str) -> sqlite3.Row | None:
        with self.reading() as conn:
            return conn.execute("SELECT * FROM instances WHERE instance_id=?", (instance_id,)).fetchone()

    def history(self, instance_id: str) -> list[dict[str, Any]]:
        with self.reading() as conn:
            rows = conn.execute(
                "SELECT event FROM history WHERE instance_id=? ORDER BY seq", (instance_id,)
            ).fetchall()
        return [json.loads(row["event"]) for row in rows]
