"""Issue 20 item 3, measured: N trials of a forced cycle whose two slots are both SIGKILLed (by PID)
during the canary, on the real local platform (ridge trainer, MLflow registry, azmlinfsrv slots behind
the router, the local Functions host). Prints one row per trial and how many ended with the old model at
100 % once its slot was back (after a trial that leaves a split, the next ones are "not run": they need
one model at 100 %); then one more forced cycle, which must deploy.

    python bench/bench_rollback_trials.py [--trials 5] [--hold-down]

Plain trials kill both slots once, as the issue's probe did (whether the rollback then finds the old slot
restarting is chance); `--hold-down` kills them again whenever they come back until the rollback has
begun, so every trial finds the old slot restarting (what the integration test does).

Bounded: one first cycle, N trial cycles and one final cycle, each within 300 s. Exit 0 when every trial
ended with the old model at 100 % and the final cycle deployed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from retrain import adapters  # noqa: E402
from tests.rollback_trial import (  # noqa: E402
    ENV,
    TICKER,
    killed_canary_trial,
    local_host,
    run_cycle,
    ticker_outcome,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--hold-down", action="store_true", help="keep both slots down until the rollback")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rollback-trials-") as tmp:
        state_dir = Path(tmp) / "state"
        for key in ("RETRAIN_FUNCTION_KEY", "RETRAIN_SYSTEM_KEY", "MLFLOW_TRACKING_URI"):
            os.environ.pop(key, None)
        os.environ.update({**ENV, "RETRAIN_STATE_DIR": str(state_dir)})
        with local_host(state_dir) as host:
            first = run_cycle(host, {"ticker": TICKER})
            if ticker_outcome(first)["status"] != "deployed":
                print(f"the first cycle did not deploy: {first}")
                return 2
            print(
                f"{'trial':>5}  {'killed at':<17}  {'cycle':<9}  {'old slot':<8}  traffic after  old model at 100 %"
            )
            good = 0
            endpoint = ticker_outcome(first)["endpoint"]  # the layout's (RETRAIN_ENDPOINTS) serving endpoint
            for n in range(1, args.trials + 1):
                traffic = adapters.get_platform().get_endpoint(endpoint).traffic
                if 100 not in traffic.values():  # a trial left a split: the next cannot start from one model
                    print(f"{n:>5}  not run: the endpoint was left at {traffic}")
                    continue
                trial = killed_canary_trial(host, state_dir, hold_down=args.hold_down)
                good += trial.old_model_at_100
                print(
                    f"{n:>5}  {trial.killed_at_step or 'missed':<17}  {trial.outcome:<9}  "
                    f"{trial.old_slot:<8}  {str(trial.traffic):<13}  {trial.old_model_at_100}"
                )
            final = run_cycle(host, {"ticker": TICKER, "force": True})
            deployed = ticker_outcome(final)["status"] == "deployed"
            if not deployed:
                final["error"] = " ".join(
                    str(ticker_outcome(final).get("error") or final.get("error")).split()
                )[:300]
    print(
        f"\n{good} of {args.trials} trials ended with the old model at 100 %; the next cycle "
        f"{'deployed' if deployed else 'did not deploy: ' + str(final.get('error'))} "
        f"({time.monotonic() - started:.0f} s, ridge, canary {ENV['RETRAIN_CANARY_PERCENT']} %, "
        f"{'held down until the rollback' if args.hold_down else 'killed once'})"
    )
    return 0 if good == args.trials and deployed else 1


if __name__ == "__main__":
    raise SystemExit(main())
