"""The local online endpoint for real: two `azmlinfsrv` slots running scorer/score.py with two real
models behind the stable scoring URL; traffic 100/0 -> 90/10 -> 0/100 under continuous load without a
single failed request; the URL survives stop_all() + restore(); bad payloads answer the scorer's 400."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from retrain.local.endpoint import LocalEndpoints
from retrain.local.processes import process_alive, read_json
from retrain.ports import ModelRef, PlatformError, TransientPlatformError

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SCORER = REPO / "scorer" / "score.py"
NAME = "msft-forecaster"
ENDPOINT = "msft-test"


@pytest.fixture(scope="module")
def second_model(tmp_path_factory: pytest.TempPathFactory, sample_csv: Path) -> Path:
    """A second real model (another seed, fewer epochs), so the two slots answer differently."""
    out = tmp_path_factory.mktemp("trained-second")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}"}
    env.pop("MLFLOW_RUN_ID", None)
    subprocess.run(
        [
            sys.executable,
            str(REPO / "trainer" / "train.py"),
            "--data",
            str(sample_csv),
            "--output",
            str(out),
            "--max-epochs",
            "2",
            "--seed",
            "7",
        ],
        check=True,
        env=env,
        cwd=out,
        timeout=600,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def models(trained_model: Path, second_model: Path) -> dict[str, Path]:
    return {"1": trained_model / "model", "2": second_model / "model"}


@pytest.fixture(scope="module")
def closes(sample_csv: Path) -> list[float]:
    return [float(c) for c in pd.read_csv(sample_csv)["Close"].tail(40)]


def _fetcher(models: dict[str, Path]):
    def fetch(model: ModelRef, dest: Path) -> None:  # what the registry download does: dest/model/...
        dest.mkdir(parents=True, exist_ok=True)
        if model.version not in models:  # a corrupt model, to see a deployment fail
            (dest / "model").mkdir()
            (dest / "model" / "MLmodel").write_text("not: [an mlflow model")
            return
        shutil.copytree(models[model.version], dest / "model")

    return fetch


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("endpoint-state")


@pytest.fixture(scope="module")
def endpoints(state_dir: Path, models: dict[str, Path]) -> Iterator[LocalEndpoints]:
    eps = LocalEndpoints(state_dir, _fetcher(models), SCORER)
    yield eps
    eps.stop_all()


def _post(url: str, payload: object, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), dict(exc.headers)


def _slot_pids(state_dir: Path) -> dict[str, int]:
    state = read_json(state_dir / "endpoints" / ENDPOINT / "state.json")
    return {slot: info["pid"] for slot, info in state["slots"].items()}


@pytest.fixture(scope="module")
def live(endpoints: LocalEndpoints) -> LocalEndpoints:
    """The endpoint with model 1 on blue (100 %) and model 2 on green (0 %), both answering."""
    created = endpoints.begin_create_endpoint(ENDPOINT)
    assert created.state == "Succeeded" and created.scoring_uri and created.traffic == {}
    assert endpoints.begin_create_endpoint(ENDPOINT).scoring_uri == created.scoring_uri  # idempotent
    with pytest.raises(TransientPlatformError, match="503"):
        endpoints.invoke(ENDPOINT, {"close": [1.0] * 40})  # nothing deployed yet
    blue = endpoints.begin_deployment(ENDPOINT, "blue", ModelRef(NAME, "1"))
    green = endpoints.begin_deployment(ENDPOINT, "green", ModelRef(NAME, "2"))
    assert blue.state in ("Creating", "Succeeded") and green.state in ("Creating", "Succeeded")
    endpoints.wait_until_ready(ENDPOINT)
    assert endpoints.get_deployment(ENDPOINT, "blue").state == "Succeeded"
    endpoints.set_traffic(ENDPOINT, {"blue": 100, "green": 0})
    return endpoints


def test_each_slot_serves_its_own_model_and_can_be_pinned(live: LocalEndpoints, closes: list[float]) -> None:
    state = live.get_endpoint(ENDPOINT)
    assert state.traffic == {"blue": 100, "green": 0}
    assert state.deployments["green"]["version"] == "2"
    routed = live.invoke(ENDPOINT, {"close": closes})
    assert routed["model"] == {"name": NAME, "version": "1", "window": routed["model"]["window"]}
    assert len(routed["forecast"]) == 1
    pinned = live.invoke(ENDPOINT, {"close": closes}, slot="green")
    assert pinned["model"]["version"] == "2"
    assert pinned["forecast"] != routed["forecast"]  # two different real models
    # Repeating a deployment of the same model to a live slot changes nothing.
    pids = _slot_pids(live.root.parent)
    assert live.begin_deployment(ENDPOINT, "blue", ModelRef(NAME, "1")).state == "Succeeded"
    assert _slot_pids(live.root.parent) == pids


def test_traffic_shifts_drop_no_request(live: LocalEndpoints, closes: list[float]) -> None:
    url = live.scoring_uri(ENDPOINT)
    results: list[tuple[float, int, str, str]] = []  # (sent at, status, version, slot header)
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                status, body, headers = _post(url, {"close": closes})
                version = body.get("model", {}).get("version", "?")
                results.append((sent, status, version, headers.get("azureml-model-deployment", "")))
            except OSError as exc:  # a dropped connection counts as a failure
                results.append((sent, 0, repr(exc), ""))

    threads = [threading.Thread(target=client) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        live.set_traffic(ENDPOINT, {"blue": 90, "green": 10})
        canary_from = time.monotonic()
        deadline = canary_from + 60
        while sum(r[0] > canary_from for r in results) < 40 and time.monotonic() < deadline:
            time.sleep(0.1)
        live.set_traffic(ENDPOINT, {"blue": 0, "green": 100})
        full_from = time.monotonic()
        while sum(r[0] > full_from for r in results) < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)

    failures = [r for r in results if r[1] != 200]
    assert not failures, failures[:5]
    before = [r[2] for r in results if r[0] < canary_from - 0.05]
    canary = [r[2] for r in results if canary_from < r[0] < full_from - 0.05]
    after = [r[2] for r in results if r[0] > full_from]
    assert before and set(before) == {"1"}
    assert {"1", "2"} == set(canary) and canary.count("1") > canary.count("2")
    assert len(after) >= 20 and set(after) == {"2"}
    assert all(r[3] == {"1": "blue", "2": "green"}[r[2]] for r in results)  # Azure's response header


def test_bad_payload_through_the_router_answers_the_scorers_400(live: LocalEndpoints) -> None:
    url = live.scoring_uri(ENDPOINT)
    status, body, _ = _post(url, {"close": [1.0, 2.0]})
    assert status == 400 and "close" in json.dumps(body)
    status, body, _ = _post(url, {"nonsense": True})
    assert status == 400
    with pytest.raises(PlatformError) as info:
        live.invoke(ENDPOINT, {"close": "abc"})
    assert not isinstance(info.value, TransientPlatformError) and "400" in str(info.value)
    status, body, _ = _post(url, {"close": [1.0] * 40}, headers={"azureml-model-deployment": "red"})
    assert status == 404 and "not found" in body["error"]
    with urllib.request.urlopen(url.rsplit("/", 1)[0] + "/", timeout=10) as response:  # liveness
        assert response.status == 200


def test_traffic_and_deletion_rules(live: LocalEndpoints) -> None:
    with pytest.raises(PlatformError, match="sum to 100"):
        live.set_traffic(ENDPOINT, {"blue": 50, "green": 60})
    current = live.get_endpoint(ENDPOINT).traffic
    serving = max(current, key=lambda s: current[s])
    with pytest.raises(PlatformError, match="set its traffic to 0"):
        live.begin_delete_deployment(ENDPOINT, serving)
    with pytest.raises(PlatformError, match="does not exist"):
        live.begin_deployment("no-such-endpoint", "blue", ModelRef(NAME, "1"))
    assert live.get_endpoint("no-such-endpoint").state == "NotFound"


def test_scoring_url_survives_stop_all_and_restore(
    live: LocalEndpoints, state_dir: Path, models: dict[str, Path], closes: list[float]
) -> None:
    before = live.get_endpoint(ENDPOINT)
    old_pids = _slot_pids(state_dir)
    # Another process on the same state dir (a `retrain run` next to `retrain serve`) stops only its own.
    LocalEndpoints(state_dir, _fetcher(models), SCORER).stop_all()
    assert all(process_alive(pid) for pid in old_pids.values())
    live.stop_all()
    assert not any(process_alive(pid) for pid in old_pids.values())
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(before.scoring_uri.rsplit("/", 1)[0] + "/", timeout=5)

    restarted = LocalEndpoints(state_dir, _fetcher(models), SCORER)  # as after a process restart
    try:
        [restored] = restarted.restore()
        assert restored.scoring_uri == before.scoring_uri and restored.traffic == before.traffic
        restarted.wait_until_ready(ENDPOINT)
        assert _slot_pids(state_dir).keys() == old_pids.keys() and _slot_pids(state_dir) != old_pids
        serving = max(before.traffic, key=lambda s: before.traffic[s])
        status, body, headers = _post(before.scoring_uri, {"close": closes})
        assert status == 200 and headers["azureml-model-deployment"] == serving
        # The retired slot goes: traffic 0 first, then the process stops and its state is gone.
        idle = next(s for s in before.traffic if s != serving)
        idle_pid = _slot_pids(state_dir)[idle]
        assert restarted.begin_delete_deployment(ENDPOINT, idle).state == "NotFound"
        assert not process_alive(idle_pid)
        assert restarted.get_deployment(ENDPOINT, idle).state == "NotFound"
        assert set(restarted.get_endpoint(ENDPOINT).traffic) == {serving}
        assert _post(before.scoring_uri, {"close": closes})[0] == 200
    finally:
        restarted.stop_all()


def test_a_slot_whose_model_cannot_load_reports_failed_with_its_log(endpoints: LocalEndpoints) -> None:
    endpoints.begin_create_endpoint("broken-test")
    started = endpoints.begin_deployment("broken-test", "blue", ModelRef(NAME, "666"))
    assert started.state in ("Creating", "Failed")
    deadline = time.monotonic() + 120
    state = endpoints.get_deployment("broken-test", "blue")
    while state.state == "Creating" and time.monotonic() < deadline:
        time.sleep(0.25)
        state = endpoints.get_deployment("broken-test", "blue")
    assert (
        state.state == "Failed"
        and "not running" in (state.error or "")
        and "Worker failed to boot" in state.error
    )
    with pytest.raises(PlatformError, match="not running"):
        endpoints.set_traffic("broken-test", {"blue": 100})
    assert endpoints.get_endpoint("broken-test").traffic == {"blue": 0}
