"""Several first cycles at once on a fresh process (issue 9 point 2): their first MLflow calls reach the
local platform from different activities at the same moment. Concurrent first imports of different
mlflow submodules deadlock in importlib and leave "partially initialized module 'mlflow'" for the rest
of the process, so every cycle failed until a restart. Run in a fresh interpreter: in this test
process MLflow may already be imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys, threading
from pathlib import Path
from retrain.local.platform import LocalPlatform

platform = LocalPlatform(Path(sys.argv[1]))  # one platform, shared as get_platform() shares it
threads_n = 6
barrier = threading.Barrier(threads_n)
results, errors = {}, []

def first_call(i):
    barrier.wait()  # all at once, as five tickers posted together reach their first MLflow step
    try:
        kind = i % 3
        if kind == 0:
            results[i] = platform.get_champion(f"t{i}-forecaster")  # the cycle's get_champion
        elif kind == 1:
            results[i] = platform._experiment_id(f"retrain-t{i}")  # submit_training's experiment
        else:
            results[i] = platform._version_for_job(f"t{i}-forecaster", "job")  # register_model's lookup
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}"[:300])

threads = [threading.Thread(target=first_call, args=(i,)) for i in range(threads_n)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"errors": errors, "results": {str(k): v for k, v in results.items()}}))
"""


def test_first_mlflow_calls_from_several_cycles_at_once_all_succeed(tmp_path: Path) -> None:
    for trial in range(2):
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(tmp_path / f"state{trial}")],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        outcome = json.loads(done.stdout.strip().splitlines()[-1])
        assert outcome["errors"] == [], outcome["errors"]
        results = outcome["results"]
        assert len(results) == 6
        assert results["0"] is None and results["3"] is None  # no champion yet
        assert results["2"] is None and results["5"] is None  # no version for that job
        assert results["1"] != results["4"] and all(results[k].isdigit() for k in ("1", "4"))
