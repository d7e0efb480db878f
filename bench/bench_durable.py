"""Local durable engine: time per orchestrator episode and per whole orchestration, by history size.

Orchestration `loop` of tests/durable_app: k sequential no-op activities, so the history has
4 + 4k events (each episode adds OrchestratorStarted, the completion, the next TaskScheduled and
OrchestratorCompleted). Reference: the same k activities called directly in a loop, in this run.
Prints median of several runs.  usage: python bench/bench_durable.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from functions_host.durable import DurableEngine  # noqa: E402
from tests.durable_app.adapter import AppFunctions, load_app_module  # noqa: E402


def one_run(app: AppFunctions, activities: int) -> dict[str, float]:
    sdk_times: list[float] = []

    def run_orchestrator(name: str, context_json: str) -> str:
        started = time.perf_counter()
        try:
            return app.run_orchestrator(name, context_json)
        finally:
            sdk_times.append(time.perf_counter() - started)

    with tempfile.TemporaryDirectory() as tmp:
        engine = DurableEngine(
            Path(tmp) / "bench.db", run_orchestrator, app.run_activity, has_function=app.has_function
        )
        engine.start()
        try:
            started = time.perf_counter()
            instance_id = engine.start_new("loop", None, json.dumps({"n": activities}))
            status = engine.wait_for_completion(instance_id, timeout=600)
            total = time.perf_counter() - started
            events = len(engine.get_status(instance_id, show_history=True)["historyEvents"])
        finally:
            engine.close()
    assert status["runtimeStatus"] == "Completed", status
    started = time.perf_counter()
    for i in range(activities):  # reference: the same activities, called directly
        app.run_activity("noop", json.dumps(i))
    reference = time.perf_counter() - started
    return {
        "events": events,
        "episodes": len(sdk_times),
        "total": total,
        "reference": reference,
        "per_episode": total / len(sdk_times),
        "sdk_per_episode": sum(sdk_times) / len(sdk_times),
        "sdk_last_episode": sdk_times[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    app = AppFunctions(load_app_module())
    cases = [("~10", 2), ("40", 9), ("~100", 24), ("~1000", 249)]
    print(
        f"{'history':>8} {'events':>6} {'episodes':>8} {'orchestration':>13} {'per episode':>11} "
        f"{'SDK/episode':>11} {'SDK last ep.':>12} {'reference':>10} {'host overhead':>13}"
    )
    for label, activities in cases:
        runs = [
            one_run(app, activities) for _ in range(args.runs if activities < 200 else max(3, args.runs // 2))
        ]

        def med(key: str, runs=runs) -> float:
            return statistics.median(r[key] for r in runs)

        overhead = med("total") - med("reference")
        print(
            f"{label:>8} {int(med('events')):>6} {int(med('episodes')):>8} {med('total') * 1e3:>10.1f} ms "
            f"{med('per_episode') * 1e3:>8.2f} ms {med('sdk_per_episode') * 1e3:>8.2f} ms "
            f"{med('sdk_last_episode') * 1e3:>9.2f} ms {med('reference') * 1e3:>7.2f} ms "
            f"{overhead * 1e3:>10.1f} ms"
        )
    print("orchestration = start_new -> Completed (wall, median); per episode = orchestration / episodes;")
    print("SDK = time inside the real SDK's replay; reference = the same activities called in a plain loop;")
    print("host overhead = orchestration - reference.")


if __name__ == "__main__":
    main()
