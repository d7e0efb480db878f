"""A corrupt or emptied durable.sqlite (issue 9 point 8): a clear error naming the file and what to do,
and never a silent start with every orchestration's history gone."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from functions_host.durable import DurableEngine, DurableStoreError
from functions_host.durable.store import Store, marker_path


def _engine(path: Path) -> DurableEngine:
    def never(*_: object) -> str:
        raise AssertionError("nothing runs in these tests")

    return DurableEngine(path, never, never)


def _store_with_history(tmp_path: Path) -> Path:
    path = tmp_path / "durable.sqlite"
    store = Store(path)
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO instances(instance_id, name, execution_id, status, created_time, last_updated_time, "
            "state) VALUES ('i1', 'orch', 'e1', 'Running', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', '{}')"
        )
    store.close()
    return path


def test_a_fresh_store_opens_and_reopens(tmp_path: Path) -> None:
    path = _store_with_history(tmp_path)
    assert marker_path(path).is_file()
    store = Store(path)
    assert store.instance("i1") is not None
    store.close()


def test_a_garbage_file_is_refused_with_its_name_and_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "durable.sqlite"
    path.write_bytes(b"this is not a database, just garbage bytes\n" * 100)
    with pytest.raises(DurableStoreError) as caught:
        _engine(path)
    message = str(caught.value)
    assert str(path) in message and "not a usable SQLite database" in message
    assert "Restore the file from a backup" in message and "move it away" in message
    assert path.read_bytes().startswith(b"this is not a database")  # left as it was


@pytest.mark.parametrize("damage", ["truncate", "drop_tables"])
def test_an_emptied_store_whose_history_was_expected_is_refused(tmp_path: Path, damage: str) -> None:
    path = _store_with_history(tmp_path)
    if damage == "truncate":
        path.write_bytes(b"")
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        conn = sqlite3.connect(path)
        conn.executescript("DROP TABLE history; DROP TABLE instances;")
        conn.close()
    with pytest.raises(DurableStoreError) as caught:
        _engine(path)
    message = str(caught.value)
    assert str(path) in message and "held durable history" in message
    assert ("is empty" if damage == "truncate" else "lacks the tables history, instances") in message
    assert str(marker_path(path)) in message  # what to delete to start afresh on purpose
    # Nothing was created over it: the operator can still restore, and a second try says the same.
    assert not {"instances"} & {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    with pytest.raises(DurableStoreError):
        _engine(path)
    marker_path(path).unlink()  # the operator's deliberate fresh start
    Store(path).close()


def test_a_zero_length_file_without_history_is_a_fresh_store(tmp_path: Path) -> None:
    path = tmp_path / "durable.sqlite"
    path.write_bytes(b"")
    store = Store(path)  # e.g. touched by a tool; no marker: nothing was ever lost
    assert store.instance("x") is None
    store.close()


def test_the_cli_says_what_to_do_instead_of_a_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "host" / "durable.sqlite"
    path.parent.mkdir()
    path.write_bytes(b"garbage" * 500)
    done = subprocess.run(
        [sys.executable, "-m", "retrain", "status", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    output = done.stdout + done.stderr
    assert str(path) in output and "Restore the file from a backup" in output
    assert "Traceback" not in output
