"""The monitor's SQLite files (`ledger.sqlite`, `monitor.sqlite`) refuse to start over silently.

The same rule as the durable store (functions_host/durable/store.py): a file that once held its tables
leaves a marker beside it (`<file>.created`); opening refuses, naming the file and what to do, a file that is
missing, empty or lacks its tables while the marker says it held records. Records are never dropped by
recreating an emptied or replaced file.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path


class StateFileError(RuntimeError):
    """A state file that cannot be used as it is; the message names the file and what to do."""


def marker_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".created")


def refuse_lost_records(db_path: Path, tables: Iterable[str], what: str) -> None:
    """Raise StateFileError when `db_path` lacks `tables` (missing, empty, replaced) but its marker says it
    held them. Call before creating the tables."""
    marker = marker_path(db_path)
    if not marker.exists():
        return
    size = db_path.stat().st_size if db_path.exists() else None
    found: set[str] = set()
    if size:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)) as db:
                found = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise StateFileError(
                f"{db_path} is not a usable SQLite database ({exc}), so {what} cannot be read. Restore "
                f"the file from a backup, or move it away (e.g. to {db_path.name}.corrupt) and delete "
                f"{marker} to start with no records."
            ) from None
    missing = set(tables) - found
    if not missing:
        return
    state = (
        "is missing"
        if size is None
        else "is empty"
        if size == 0
        else f"lacks the tables {', '.join(sorted(missing))}"
    )
    raise StateFileError(
        f"{db_path} {state}, but it held {what} (see {marker}); refusing to start over with the records "
        f"gone. Restore the file from a backup, or delete {marker} to start with no records."
    )


def mark_created(db_path: Path) -> None:
    """Leave the marker once the file holds its tables (atomic: a reader sees it whole or not at all)."""
    marker = marker_path(db_path)
    if marker.exists():
        return
    tmp = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"created": datetime.now(UTC).isoformat(), "db": db_path.name}))
    os.replace(tmp, marker)
