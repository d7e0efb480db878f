"""Small OS helpers shared by the job runner and the endpoint slots: atomic JSON files, detached
processes identified by (PID, start time) so a recycled PID is never mistaken for ours, and stopping
a process group by its leader's PID."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp file in the same directory, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def process_start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks since boot (field 22 of /proc/<pid>/stat), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = stat[stat.rindex(")") + 2 :].split()
    return int(rest[19])


def process_alive(pid: int | None, start_ticks: int | None = None) -> bool:
    """True when `pid` runs and is not a zombie, and (when given) started at `start_ticks`."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    rest = stat[stat.rindex(")") + 2 :].split()
    if rest[0] in ("Z", "X"):
        _reap(pid)  # if it is our child, so it does not linger as a zombie
        return False
    return start_ticks is None or int(rest[19]) == start_ticks


def stop_process_group(pid: int | None, start_ticks: int | None = None, timeout: float = 10.0) -> bool:
    """Stop a process started with `start_new_session=True` (it leads its own process group) and its
    children: SIGTERM to the group, then SIGKILL after `timeout`. Returns True when something was
    stopped. Checks the start time so a recycled PID is left alone."""
    if not process_alive(pid, start_ticks):
        return False
    assert pid is not None
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    except PermissionError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid, start_ticks):
            _reap(pid)
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, max_chars: int = 2000) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_chars))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def process_group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`, read from /proc: a group outlives its
    leader while a child of it (a trainer) runs on."""
    members: list[int] = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_file.read_text()
        except OSError:
            continue  # it ended meanwhile
        rest = stat[stat.rindex(")") + 2 :].split()
        if int(rest[2]) == pgid and rest[0] not in ("Z", "X"):
            members.append(int(stat_file.parent.name))
    return members


def stop_whole_process_group(pid: int | None, start_ticks: int | None = None, timeout: float = 10.0) -> bool:
    """`stop_process_group`, then SIGKILL whatever of the group still runs (a child that outlived or
    ignored the leader's SIGTERM), waiting up to `timeout` for the group to be empty. Returns True when
    something was stopped. Only a leader that is ours (PID and start time) has its group touched: the
    group's id is the leader's PID, which Linux does not reuse while the group has members."""
    if not process_alive(pid, start_ticks):
        return False
    assert pid is not None
    stop_process_group(pid, start_ticks, timeout)
    deadline = time.monotonic() + timeout
    while process_group_members(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        time.sleep(0.05)
    return True
