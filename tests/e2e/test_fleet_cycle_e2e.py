"""A fleet cycle end to end (issue 22, done when): 55 tickers of synthetic prices (CSVs written here into
RETRAIN_DATA_DIR, RETRAIN_SOURCE=csv:{ticker}.csv) through one real local host on the real local
platform, ridge trainer, the default layout (every ticker on `fleet-models`).

- `POST /api/retrain {"tickers": [...]}` with RETRAIN_TRAINING_BATCH=20: three batches, each one
  sub-orchestration and ONE training job (a local runner process per batch);
- one ticker whose CSV is broken fails alone, with its reason; every other ticker is deployed or rejected
  by the gate, and the deployed ones went out in ONE rollout (one rollout id, one bundle version) and
  score through the one stable URL with their own model;
- a second fleet request over tickers the first holds, while it runs, is a 409 naming the holder;
- the timer's path (`retrain_timer`, run now through the host's admin route as Azure's manual run) starts
  the same fleet orchestration, `fleet-<yyyy>w<ww>`, which skips the tickers the running fleet holds.
The elapsed time from the request to the fleet's end is printed (pytest -s shows it)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from retrain import naming
from retrain.fleet import BATCH_ORCHESTRATOR, FLEET_ORCHESTRATOR
from retrain.host_client import HostClient, http_json
from tests.helpers import random_walk, real_local_host, set_local_ridge_env, write_price_csv
from tests.integration.test_fleet_cycle import durable_status

GOOD = [f"F{i:02d}" for i in range(54)]
BROKEN = "BADCSV"
TICKERS = [*GOOD[:30], BROKEN, *GOOD[30:]]  # 55: batches of 20, 20 and 15, the broken one in the second
NEW = "NEWONE"  # only the timer's fleet names it, and it has no file: that fleet trains nothing


@pytest.fixture
def fleet_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data_dir = tmp_path / "prices"
    data_dir.mkdir()
    for i, ticker in enumerate(GOOD):
        write_price_csv(data_dir / f"{ticker}.csv", random_walk(100 + i))
    (data_dir / f"{BROKEN}.csv").write_text("Date,Close\nyesterday,cheap\n")
    state_dir = tmp_path / "state"
    set_local_ridge_env(
        monkeypatch,
        state_dir,
        RETRAIN_DATA_DIR=str(data_dir),
        RETRAIN_SOURCE="csv:{ticker}.csv",  # relative: read inside RETRAIN_DATA_DIR, not the host's cwd
        RETRAIN_TICKERS=",".join(TICKERS),
        RETRAIN_TRAINING_BATCH="20",
        RETRAIN_SMOKE_MAX_LATENCY_MS="10000",  # a busy machine: the bound is not what is tested here
    )
    monkeypatch.delenv("RETRAIN_ENDPOINTS", raising=False)  # the default layout: shared
    with real_local_host(state_dir) as host:
        yield host, state_dir


def test_a_fleet_of_55_tickers_fans_out_fails_one_alone_and_deploys_the_rest_in_one_rollout(
    fleet_host, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, state_dir = fleet_host
    client = HostClient(host.url, host.function_key)
    started = time.monotonic()
    code, answer = client.start_cycle({"tickers": TICKERS})
    assert code == 202 and "skipped" not in answer, answer
    fleet_id = answer["id"]

    # A second fleet over tickers the first holds, while it runs: refused, naming the holder.
    code, second = client.start_cycle({"tickers": TICKERS[:3]})
    assert code == 409, second
    assert second["skipped"] == dict.fromkeys(TICKERS[:3], fleet_id) and list(second["holders"]) == [fleet_id]
    assert "already being retrained" in second["error"]

    # The timer's path, now: this week's fleet over RETRAIN_TICKERS, the same orchestration.
    monkeypatch.setenv("RETRAIN_TICKERS", f"{TICKERS[0]},{NEW}")
    timer_id = naming.scheduled_fleet_instance_id(datetime.now(UTC))
    code, _ = http_json(
        "POST", f"{host.url}/admin/functions/retrain_timer?code={host.system_key}", {"input": ""}
    )
    assert code == 202
    weekly = client.follow_cycle(timer_id, poll_s=0.5, timeout_s=120)
    assert durable_status(host, timer_id)["name"] == FLEET_ORCHESTRATOR
    assert weekly["runtime_status"] == "Completed", weekly
    tickers = weekly["output"]["tickers"]
    assert tickers[TICKERS[0]]["status"] == "skipped" and fleet_id in tickers[TICKERS[0]]["error"], tickers
    assert tickers[NEW]["status"] == "failed" and f"csv:{NEW}.csv" in tickers[NEW]["error"], tickers

    status = client.follow_cycle(fleet_id, poll_s=1.0, timeout_s=600)
    elapsed = time.monotonic() - started
    print(f"\nfleet of {len(TICKERS)} tickers: request to end {elapsed:.1f} s")
    print(status["output"]["timings_s"], [b.get("timings_s") for b in status["output"]["batches"]])
    assert status["runtime_status"] == "Completed", status
    out = status["output"]
    assert out["status"] == "completed" and list(out["tickers"]) == TICKERS

    # Three batches, each a sub-orchestration with one training job (one runner process, one job folder).
    batches = [naming.batch_instance_id(fleet_id, i) for i in range(3)]
    assert [(b["batch"], b["tickers"], b["job_name"]) for b in out["batches"]] == [
        (b, n, naming.job_name(b)) for b, n in zip(batches, (20, 20, 15), strict=True)
    ]
    for batch_id in batches:
        assert durable_status(host, batch_id)["name"] == BATCH_ORCHESTRATOR
        assert (state_dir / "jobs" / naming.job_name(batch_id)).is_dir()

    # The broken ticker fails alone; the rest are deployed, or rejected by the gate with its reasons.
    broken = out["tickers"][BROKEN]
    assert broken["status"] == "failed" and broken["error"].startswith("data: ") and BROKEN in broken["error"]
    others = {t: o for t, o in out["tickers"].items() if t != BROKEN}
    assert {o["status"] for o in others.values()} <= {"deployed", "rejected"}, others
    assert all(o["gate"] for o in others.values() if o["status"] == "rejected")
    deployed = sorted(t for t, o in others.items() if o["status"] == "deployed")
    assert len(deployed) >= len(GOOD) // 2, out["counts"]
    assert out["counts"] == {
        "accepted": len(deployed),
        "deployed": len(deployed),
        "rejected": len(GOOD) - len(deployed),
        "failed": 1,
        "skipped": 0,
    }

    # ONE rollout took every deployed ticker: one rollout id, one bundle version, one scoring URL.
    rollouts = {(others[t]["rollout"], others[t]["bundle"], others[t]["bundle_version"]) for t in deployed}
    assert len(rollouts) == 1, rollouts
    assert list(out["endpoints"]) == ["fleet-models"]
    url = out["endpoints"]["fleet-models"]
    for ticker in (deployed[0], deployed[-1]):
        closes = [float(c) for c in random_walk(100 + GOOD.index(ticker))[-20:]]
        code, scored = http_json("POST", url, {"ticker": ticker, "close": closes})
        assert code == 200 and scored["model"]["name"] == naming.model_name(ticker), scored
    code, scored = http_json("POST", url, {"ticker": BROKEN, "close": [1.0] * 20})
    assert code == 404 and "not served" in scored["message"], scored
