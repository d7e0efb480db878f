"""SIGKILL the durable engine at every step boundary of a multi-step orchestration, restart it on
the same DB, and check that it completes with the right output and that no activity whose
completion was committed ever ran again."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

RUNNER = Path(__file__).resolve().parents[1] / "durable_app" / "crash_runner.py"
STEPS = 4
FAN_OUT = 3
SPEC = {
    "crash-a": [
        "loop",
        {
            "n": STEPS,
            "step": True,
            "run": "a",
            "delay": 0.25,
            "timer_at": 1,
            "timer_s": 0.3,
            "fan_out": FAN_OUT,
        },
    ],
    "crash-b": ["loop", {"n": STEPS, "step": True, "run": "b", "delay": 0.25, "fan_out": FAN_OUT}],
}
EXPECTED = [f"s{i}" for i in range(STEPS)] + [sum(2 * j for j in range(FAN_OUT))]


def committed_completions(db: Path) -> set[tuple[str, str]]:
    """(instance, activity call) pairs whose completion is committed, in history or in the inbox."""
    if not db.exists():
        return set()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        try:
            events = [
                (r[0], json.loads(r[1]))
                for r in conn.execute(
                    "SELECT instance_id, event FROM history UNION ALL SELECT instance_id, event FROM inbox"
                )
            ]
        except sqlite3.OperationalError:  # tables not created yet
            return set()
    finally:
        conn.close()
    scheduled = {(i, e["EventId"]): f"{e['Name']} {e['Input']}" for i, e in events if e["EventType"] == 4}
    return {(i, scheduled.get((i, e["TaskScheduledId"]), "?")) for i, e in events if e["EventType"] == 5}


def step_runs(log: Path) -> Counter:
    return Counter(log.read_text().splitlines()) if log.exists() else Counter()


def start_runner(db: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "DURABLE_TEST_LOG": str(log)}
    return subprocess.Popen(
        [sys.executable, str(RUNNER), str(db), json.dumps(SPEC)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    proc.stderr.close()


def wait_for(proc: subprocess.Popen, condition: Callable[[], bool], timeout: float = 30) -> bool:
    """True when `condition` held while the runner was alive; False when the runner finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    raise AssertionError("the runner made no progress")


def test_sigkill_at_every_step_boundary(tmp_path: Path) -> None:
    db, log = tmp_path / "durable.db", tmp_path / "steps.log"
    snapshots: list[tuple[set[tuple[str, str]], Counter]] = []
    kills = mid_activity_kills = 0
    target = 1
    proc = start_runner(db, log)
    try:
        while True:
            # Alternate: kill right after the next completion is committed, or while a step runs.
            if kills % 2 == 0:
                reached = wait_for(proc, lambda t=target: len(committed_completions(db)) >= t)
            else:

                def step_running() -> bool:
                    done = {c for _i, c in committed_completions(db)}
                    runs = step_runs(log)
                    return any(
                        line.startswith("step")
                        and not any(
                            f'"i": {line.split()[2]}' in c and f'"run": "{line.split()[1]}"' in c
                            for c in done
                        )
                        for line in runs
                    )

                reached = wait_for(proc, step_running)
            if not reached:
                break
            kill(proc)
            kills += 1
            if kills % 2 == 0:
                mid_activity_kills += 1
            committed = committed_completions(db)
            snapshots.append((committed, step_runs(log)))
            target = len(committed) + 1
            proc = start_runner(db, log)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            kill(proc)

    statuses = json.loads(out.strip().splitlines()[-1])
    for instance_id in SPEC:
        assert statuses[instance_id]["runtimeStatus"] == "Completed", statuses[instance_id]
        assert statuses[instance_id]["output"] == EXPECTED
    print(f"{kills} kills, {mid_activity_kills} while a step was running")
    # Both runs progress concurrently, so one kill can sit on a boundary of each; still, every run
    # was killed several times right after a commit and several times inside a running step.
    assert kills >= STEPS + 2
    assert mid_activity_kills >= 2
    final = step_runs(log)
    for run in ("a", "b"):
        for i in range(STEPS):
            assert final[f"step {run} {i}"] >= 1
    # No activity ran again after its completion had been committed (checked at every kill).
    for committed, runs_then in snapshots:
        for _instance, call in committed:
            if call.startswith("step "):
                payload = json.loads(call[len("step ") :])
                line = f"step {payload['run']} {payload['i']}"
                assert final[line] == runs_then[line], f"{line} re-ran after its completion was committed"
    # Killing mid-activity re-runs that activity (at-least-once), which shows the kills landed there.
    assert sum(final.values()) > 2 * STEPS
