"""The state dir's SQLite files, opened so that a bad file is an error that names it and what to do.

A read-only, missing or corrupt state file is not the caller's fault and not a bug: the HTTP routes
answer 503 with `StateError`'s message, the CLI prints it as one `error: ...` line and exits 2.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
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
