"""Issue 20 item 3 on the real local platform (ridge trainer, MLflow registry, azmlinfsrv slots behind the
router), in the default layout (the shared endpoint's rollout deploys the cycle's model in a bundle):
both slots' servers are SIGKILLed during the canary of a forced cycle's rollout, and again whenever they come
back until the rollback has begun (so the rollback surely finds the old slot restarting: the issue's
trials hit that window 3 times in 5 by chance). Then the platform restarts them; the rollback waits for the old slot instead of giving up, so the old model ends at 100 %
(before, the failed challenger kept its canary share and every later cycle failed at begin_deployment),
and the next cycle deploys."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrain import adapters
from tests.rollback_trial import ENV, TICKER, killed_canary_trial, local_host, run_cycle, ticker_outcome


def test_a_rollback_waits_for_the_restarting_old_slot_and_the_next_cycle_deploys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = tmp_path / "state"
    for key, value in {**ENV, "RETRAIN_STATE_DIR": str(state_dir)}.items():
        monkeypatch.setenv(key, value)
    for key in ("RETRAIN_FUNCTION_KEY", "RETRAIN_SYSTEM_KEY", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)
    with local_host(state_dir) as host:
        first = run_cycle(host, {"ticker": TICKER})
        assert ticker_outcome(first)["status"] == "deployed", first
        endpoint = ticker_outcome(first)["endpoint"]
        assert adapters.get_platform().get_endpoint(endpoint).traffic == {"blue": 100}

        trial = killed_canary_trial(host, state_dir, hold_down=True)

        assert trial.killed_at_step is not None, trial
        assert trial.outcome == "failed", trial
        assert f"traffic is back on {trial.old_slot}" in trial.error, trial
        assert trial.old_model_at_100, trial

        nxt = run_cycle(host, {"ticker": TICKER, "force": True})
        assert ticker_outcome(nxt)["status"] == "deployed", nxt
        traffic = adapters.get_platform().get_endpoint(endpoint).traffic
        assert sorted(traffic.values()) == [100], traffic  # one slot serves it all
