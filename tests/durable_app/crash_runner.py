"""Runs the durable engine in its own process for the crash test: starts the given orchestrations
(unless the DB already has them), waits until all are finished, prints their statuses as one JSON
line and exits. The test SIGKILLs it at arbitrary points and starts it again on the same DB.

usage: python crash_runner.py DB SPEC_JSON   (SPEC_JSON: {"instance_id": [orchestrator, input], ...})
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from functions_host.durable import DurableEngine  # noqa: E402
from tests.durable_app.adapter import AppFunctions, load_app_module  # noqa: E402


def main() -> int:
    db, spec = Path(sys.argv[1]), json.loads(sys.argv[2])
    app = AppFunctions(load_app_module())
    engine = DurableEngine(db, app.run_orchestrator, app.run_activity, has_function=app.has_function)
    engine.start()
    for instance_id, (name, input_) in spec.items():
        if engine.get_status(instance_id) is None:
            engine.start_new(name, instance_id, json.dumps(input_))
    statuses = {}
    for instance_id in spec:
        statuses[instance_id] = engine.wait_for_completion(instance_id, timeout=60)
    engine.close()
    print(json.dumps(statuses), flush=True)
    time.sleep(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
