"""Wall time of `retrain run` on the bundled sample, broken down by step, and the share that is
orchestration overhead; for a first cycle (new endpoint, one slot) and a second one that swaps slots.

Each repetition uses a fresh state dir and runs the real CLI twice (`--max-epochs 2`; the second with
`--force`, so it always deploys and swaps blue/green). `--ticker MSFT` is a fleet of one: the fleet's
steps (guard, batches, await_rollout) and its batch's (fetch_batch_data ... register_batch_models) are
both listed. The breakdown splits the fleet's span (from its durable history) without counting an instant
twice, each to the first of these that covers it (the histories of the fleet and its batch, read-only,
and the job's own status file):
- training job: the trainer subprocess, queued -> finished (the reference: the real work, same run);
- activities: TaskScheduled -> TaskCompleted of every activity of the fleet and its batch (the platform
  calls themselves);
- endpoint rollout: from the fleet's `request_rollout` to the rollout's answer (the rollout orchestration
  deploys the bundle to the idle slot, waits for provisioning, smoke-tests, shifts the traffic);
- orchestration overhead: the rest of the span (episodes, replays, history writes, the batch's
  sub-orchestration start, event delivery from the job, scheduling gaps);
- CLI outside the orchestration: host start, slot restore, status polling, the final prediction.

    python bench/bench_cycle.py [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _history(engine: Any, instance_id: str) -> list[dict[str, Any]]:
    return engine.get_status(instance_id, show_history=True)["historyEvents"]


def _intervals(
    events: list[dict[str, Any]],
) -> tuple[list[tuple[datetime, datetime]], list[tuple[datetime, datetime]]]:
    """(activity intervals, fired-timer intervals) of one orchestration's history."""
    scheduled = {e["EventId"]: e for e in events if e["EventType"] == "TaskScheduled"}
    timers = {e["EventId"]: e for e in events if e["EventType"] == "TimerCreated"}
    activities = [
        (_t(scheduled[e["TaskScheduledId"]]["Timestamp"]), _t(e["Timestamp"]))
        for e in events
        if e["EventType"] in ("TaskCompleted", "TaskFailed") and e.get("TaskScheduledId") in scheduled
    ]
    fired = [
        (_t(timers[e["TimerId"]]["Timestamp"]), _t(e["Timestamp"]))
        for e in events
        if e["EventType"] == "TimerFired" and e.get("TimerId") in timers
    ]
    return activities, fired


Interval = tuple[datetime, datetime]


def _union(intervals: list[Interval], start: datetime, end: datetime) -> list[Interval]:
    """The intervals clipped to [start, end] and merged: no instant counted twice."""
    clipped = sorted((max(a, start), min(b, end)) for a, b in intervals if min(b, end) > max(a, start))
    merged: list[Interval] = []
    for a, b in clipped:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _seconds(intervals: list[Interval]) -> float:
    return sum((b - a).total_seconds() for a, b in intervals)


def _rollout_wait(fleet: list[dict[str, Any]]) -> list[Interval]:
    """From the fleet asking for its endpoint's rollout to the rollout's answer (the `rollout_outcome`
    event): the deployment, smoke tests and traffic shifts, done by the rollout orchestration, whose own
    history is gone by then (it continues as new for the next challengers)."""
    asked = [
        _t(e["Timestamp"])
        for e in fleet
        if e["EventType"] == "TaskScheduled" and e.get("Name") == "request_rollout"
    ]
    answered = [
        _t(e["Timestamp"])
        for e in fleet
        if e["EventType"] == "EventRaised" and e.get("Name") == "rollout_outcome"
    ]
    return [(asked[0], answered[-1])] if asked and answered else []


def breakdown(state_dir: Path, summary: dict[str, Any]) -> dict[str, float]:
    """The fleet's span, split without double counting (each instant goes to the first that covers it):
    the training job; the activities of the fleet and its batch; the endpoint's rollout (the fleet waiting
    for its answer); the rest is orchestration overhead. The batch's and the fleet's own timers are waits
    for the job and for the rollout, covered by those."""
    from functions_host.durable.engine import DurableEngine

    engine = DurableEngine(state_dir / "host" / "durable.sqlite", lambda *_: "", lambda *_: "")
    try:
        fleet = _history(engine, summary["instance_id"])
        batch = _history(engine, summary["batches"][0]["batch"])
    finally:
        engine.close()
    started = min(_t(e["Timestamp"]) for e in fleet)
    ended = max(_t(e["Timestamp"]) for e in fleet)
    span = (ended - started).total_seconds()
    job = json.loads((state_dir / "jobs" / summary["job_name"] / "status.json").read_text())
    job_run = [(_t(job["history"][0]["time"]), _t(job["history"][-1]["time"]))]
    called = [i for events in (fleet, batch) for i in _intervals(events)[0]]
    rollout = _rollout_wait(fleet)
    covered_job = _seconds(_union(job_run, started, ended))
    covered_calls = _seconds(_union(job_run + called, started, ended))
    covered_all = _seconds(_union(job_run + called + rollout, started, ended))
    return {
        "cli_wall": summary["wall_s"],
        "orchestration_span": span,
        "training_job": covered_job,
        "activities": covered_calls - covered_job,
        "endpoint_rollout": covered_all - covered_calls,
        "orchestration_overhead": span - covered_all,
        "cli_outside_orchestration": summary["wall_s"] - span,
    }


def run_once(state_dir: Path, force: bool) -> dict[str, Any]:
    """One `retrain run` (a fleet of one): its outcome, with `wall_s`, MSFT's entry and the batch's job."""
    command = [
        sys.executable,
        "-m",
        "retrain",
        "run",
        "--source",
        "sample",
        "--ticker",
        "MSFT",
        "--max-epochs",
        "2",
        "--state-dir",
        str(state_dir),
    ] + (["--force"] if force else [])
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=1200)
    wall = time.monotonic() - started
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    if done.returncode != 0:
        raise SystemExit(f"retrain run failed: {summary.get('error')}\n{done.stderr[-2000:]}")
    msft = summary["tickers"]["MSFT"]
    batch = summary["batches"][0]
    timings = {**summary["timings_s"], **(batch.get("timings_s") or {})}
    return {**summary, **msft, "timings_s": timings, "job_name": batch["job_name"], "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"first": [], "swap": []}
    for rep in range(args.reps):
        with tempfile.TemporaryDirectory(prefix="bench-cycle-") as tmp:
            for label, force in (("first", False), ("swap", True)):
                summary = run_once(Path(tmp), force)
                row = {f"step:{k}": v for k, v in summary["timings_s"].items()}
                row.update(breakdown(Path(tmp), summary))
                results[label].append(row)
                print(
                    f"rep {rep + 1}/{args.reps} {label}: {summary['wall_s']:.1f}s "
                    f"(slot {summary.get('slot')}, {summary['status']})",
                    file=sys.stderr,
                    flush=True,
                )

    keys: list[str] = []
    for rows in results.values():
        for row in rows:
            keys += [k for k in row if k not in keys]
    steps = [k for k in keys if k.startswith("step:")]
    totals = [k for k in keys if not k.startswith("step:")]
    print(
        f"\nretrain run --source sample --ticker MSFT --max-epochs 2: median of {args.reps} runs (seconds)\n"
    )
    print(f"{'':34}{'first cycle':>14}{'swap cycle':>14}")
    for key in steps + totals:
        cells = []
        for label in ("first", "swap"):
            values = [r[key] for r in results[label] if key in r]
            cells.append(f"{statistics.median(values):14.2f}" if values else f"{'-':>14}")
        name = key.removeprefix("step:")
        if key == totals[0]:
            print("-" * 62)
        print(f"{('  ' if key.startswith('step:') else '') + name:34}{''.join(cells)}")
    print("-" * 62)
    for label in ("first", "swap"):
        rows = results[label]
        share_cli = statistics.median(r["orchestration_overhead"] / r["cli_wall"] for r in rows)
        share_span = statistics.median(r["orchestration_overhead"] / r["orchestration_span"] for r in rows)
        print(
            f"{label} cycle: orchestration overhead = {100 * share_cli:.1f}% of the CLI wall time, "
            f"{100 * share_span:.1f}% of the orchestration span"
        )


if __name__ == "__main__":
    main()
