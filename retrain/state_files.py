"""The state dir's SQLite files, opened so that a bad file is an error that names it and what to do.

A read-only, missing or corrupt state file is not the caller's fault and not a bug: the HTTP routes
answer 503 with `StateError`'s message, the CLI prints it as one `error: ...` line and exits 2.

Files that hold records (`ledger.sqlite`, `monitor.sqlite`) also refuse to start over silently, by the
durable store's rule (functions_host/durable/store.py): a file that once held its tables leaves a marker
beside it (`<file>.created`), and opening refuses a file that is missing, empty or lacks its tables while
the marker says it held records (`refuse_lost_records`, `mark_created`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path


class StateError(RuntimeError):
    """A file of the state dir cannot be used; the message names the file and what to do."""

    def __init__(self, path: str | Path, problem: str, advice: str) -> None:
        super().__init__(f"state file {path} {problem}; {advice}")
        self.path = Path(path)


def sqlite_state_error(path: str | Path, exc: BaseException) -> StateError | None:
    """The StateError a SQLite failure on `path` means, or None when it is not about the file (a
    constraint or a programming error is a bug to see, not a state problem to report)."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError):
        if "locked" in text or "busy" in text:
            return StateError(path, f"is busy ({text})", "another process holds it: retry in a moment")
        if "readonly" in text or "read-only" in text:
            return StateError(
                path,
                f"is read-only ({text})",
                "make the state dir writable by this process (RETRAIN_STATE_DIR)",
            )
        return StateError(
            path,
            f"cannot be opened ({text})",
            "check that the state dir (RETRAIN_STATE_DIR) exists, is a directory and is writable by this process",
        )
    if type(exc) is sqlite3.DatabaseError:  # "file is not a database", "database disk image is malformed"
        return StateError(
            path,
            f"is corrupt ({text})",
            "restore it from a backup, or move it aside to start an empty record",
        )
    return None


@contextmanager
def sqlite_connection(path: str | Path, *, row_factory: type | None = None) -> Iterator[sqlite3.Connection]:
    """A connection (WAL journal) as one transaction: committed when the block ends, rolled back when it
    raises, always closed. A SQLite failure about the file becomes a StateError naming it."""
    try:
        db = sqlite3.connect(path, timeout=30)
    except sqlite3.Error as exc:
        raise (sqlite_state_error(path, exc) or exc) from exc
    try:
        if row_factory is not None:
            db.row_factory = row_factory
        db.execute("PRAGMA journal_mode=WAL")
        yield db
        db.commit()
    except sqlite3.Error as exc:
        db.rollback()
        raise (sqlite_state_error(path, exc) or exc) from exc
    except BaseException:
        db.rollback()
        raise
    finally:
        db.close()


def ensure_parent(path: str | Path) -> Path:
    """`path` after creating its directory; a directory that cannot be created is a StateError."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(
            target,
            f"has no usable directory ({exc.strerror or exc})",
            "make the state dir (RETRAIN_STATE_DIR) writable",
        ) from exc
    return target


def marker_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".created")


def refuse_lost_records(db_path: Path, tables: Iterable[str], what: str) -> None:
    """Raise StateError when `db_path` lacks `tables` (missing, empty, replaced) but its marker says it
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
            raise StateError(
                db_path,
                f"is not a usable SQLite database ({exc}), so {what} cannot be read",
                f"restore the file from a backup, or move it away (e.g. to {db_path.name}.corrupt) and "
                f"delete {marker} to start with no records",
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
    raise StateError(
        db_path,
        f"{state}, but it held {what} (see {marker}); refusing to start over with the records gone",
        f"restore the file from a backup, or delete {marker} to start with no records",
    )


def mark_created(db_path: Path) -> None:
    """Leave the marker once the file holds its tables (atomic: a reader sees it whole or not at all)."""
    marker = marker_path(db_path)
    if marker.exists():
        return
    tmp = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"created": datetime.now(UTC).isoformat(), "db": db_path.name}))
    os.replace(tmp, marker)
